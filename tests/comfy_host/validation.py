"""Prompt validation as ComfyUI's `execution.validate_prompt` / `validate_inputs` do it, with the same
error dictionaries ({"type", "message", "details", "extra_info"})."""

from __future__ import annotations

import inspect
import sys
import traceback

from .execution import get_input_data, map_node_over_list

ANY_TYPE = "*"  # comfy_api IO.AnyType.io_type
MATCH_TYPE = "COMFY_MATCHTYPE_V3"  # IO.MatchType.io_type: checked by the frontend
COMBO_TYPE = "COMBO"  # IO.Combo.io_type: ("COMBO", {"options": [...]}) declares a combo


def validate_node_input(received_type, input_type, strict: bool = False) -> bool:
    """comfy_execution/validation.py `validate_node_input` (current ComfyUI): equal through `__ne__` (the
    custom-node `AnyType(str)` idiom), "*" and the V3 match type on either side, a list of options into a COMBO,
    else overlapping comma-separated types ("*" among them matches too). Up to 0.3.64 a plain "*" matched nothing
    but "*" in the backend, although the frontend let you draw the link."""
    if not received_type != input_type:  # pre-union behaviour: the inverse of `__ne__`
        return True
    if ANY_TYPE in (received_type, input_type) or MATCH_TYPE in (received_type, input_type):
        return True
    if isinstance(received_type, list) and input_type == COMBO_TYPE:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if ANY_TYPE in received or ANY_TYPE in accepted:
        return True
    return received.issubset(accepted) if strict else len(received & accepted) > 0


def full_type_name(klass: type) -> str:
    return klass.__qualname__ if klass.__module__ == "builtins" else f"{klass.__module__}.{klass.__qualname__}"


def get_input_info(class_inputs: dict, name: str):
    """comfy_execution/graph.py `get_input_info` -> (type, category, extra_info) or (None, None, None)."""
    for category in ("required", "optional", "hidden"):
        if name in class_inputs.get(category, {}):
            spec = class_inputs[category][name]
            return spec[0], category, (spec[1] if len(spec) > 1 else {})
    return None, None, None


def _error(kind: str, message: str, details: str, **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _check_value(x, val, input_type, extra_info, info, validate_args, has_kwargs):
    """The constant-value half of `validate_inputs`: coercion, min/max, combo membership."""
    if input_type == "INT":
        val = int(val)
    elif input_type == "FLOAT":
        val = float(val)
    elif input_type == "STRING":
        val = str(val)
    elif input_type == "BOOLEAN":
        val = bool(val)
    if x in validate_args or has_kwargs:  # VALIDATE_INPUTS takes this input: it checks it itself
        return val, None
    if "min" in extra_info and val < extra_info["min"]:
        return val, _error(
            "value_smaller_than_min", f"Value {val} smaller than min of {extra_info['min']}", f"{x}",
            input_name=x, input_config=info, received_value=val,
        )  # fmt: skip
    if "max" in extra_info and val > extra_info["max"]:
        return val, _error(
            "value_bigger_than_max", f"Value {val} bigger than max of {extra_info['max']}", f"{x}",
            input_name=x, input_config=info, received_value=val,
        )  # fmt: skip
    if isinstance(input_type, list) or input_type == COMBO_TYPE:
        if input_type == COMBO_TYPE and extra_info.get("remote_combo"):
            return val, None  # options fetched by the browser: not known to the server
        options = input_type if isinstance(input_type, list) else extra_info.get("options", [])
        if extra_info.get("multiselect", False) and isinstance(val, list):
            invalid = [v for v in val if v not in options]
        else:
            invalid = [val] if val not in options else []
        if invalid:
            big = len(options) > 20  # "Don't send back gigantic lists"
            list_info = f"(list of length {len(options)})" if big else str(options)
            return val, _error(
                "value_not_in_list", "Value not in list", f"{x}: {', '.join(repr(v) for v in invalid)} not in {list_info}",
                input_name=x, input_config=None if big else info, received_value=val,
            )  # fmt: skip
    return val, None


def _cycle(prompt: dict, visiting: list[str], unique_id: str, validated: dict):
    """execution.py `validate_inputs` meeting a node it is still validating: every node on the loop gets a
    "dependency_cycle" error naming the path (current ComfyUI; 0.3.64 recursed until RecursionError)."""
    path = visiting[visiting.index(unique_id) :] + [unique_id]
    cycle_nodes = list(dict.fromkeys(path))
    details = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in path)
    for node_id in cycle_nodes:
        error = _error(
            "dependency_cycle", "Dependency cycle detected", details, node_id=node_id, cycle_nodes=cycle_nodes
        )
        validated[node_id] = (False, [error], node_id)
    return validated[unique_id]


def validate_inputs(
    prompt: dict, item: str, validated: dict, node_classes: dict[str, type], visiting: list[str] | None = None
):
    """execution.py `validate_inputs` -> (valid, errors, node id); coerces constants in `prompt` in place.
    `visiting` is the chain of nodes being validated, to find dependency cycles."""
    visiting = [] if visiting is None else visiting
    unique_id = item
    if unique_id in validated:
        return validated[unique_id]
    if unique_id in visiting:
        return _cycle(prompt, visiting, unique_id, validated)
    inputs = prompt[unique_id]["inputs"]
    obj_class = node_classes[prompt[unique_id]["class_type"]]
    class_inputs = obj_class.INPUT_TYPES()
    valid_inputs = set(class_inputs.get("required", {})).union(set(class_inputs.get("optional", {})))
    errors, valid = [], True
    validate_args, has_kwargs = [], False
    validate_function = getattr(obj_class, "VALIDATE_INPUTS", None)
    if validate_function is not None:
        spec = inspect.getfullargspec(validate_function)
        validate_args, has_kwargs = spec.args, spec.varkw is not None
    received_types = {}
    for x in sorted(valid_inputs):  # a set in ComfyUI; sorted here so error order is stable
        input_type, category, extra_info = get_input_info(class_inputs, x)
        if x not in inputs:
            if category == "required":
                errors.append(_error("required_input_missing", "Required input is missing", f"{x}", input_name=x))
            continue
        val, info = inputs[x], (input_type, extra_info)
        if isinstance(val, list):
            if len(val) != 2:
                errors.append(_error(
                    "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", f"{x}",
                    input_name=x, input_config=info, received_value=val,
                ))  # fmt: skip
                continue
            o_id = val[0]
            received_type = node_classes[prompt[o_id]["class_type"]].RETURN_TYPES[val[1]]
            received_types[x] = received_type
            if "input_types" not in validate_args and not validate_node_input(received_type, input_type):
                errors.append(_error(
                    "return_type_mismatch", "Return type mismatch between linked nodes",
                    f"{x}, received_type({received_type}) mismatch input_type({input_type})",
                    input_name=x, input_config=info, received_type=received_type, linked_node=val,
                ))  # fmt: skip
                continue
            try:
                visiting.append(unique_id)
                try:
                    upstream = validate_inputs(prompt, o_id, validated, node_classes, visiting)
                finally:
                    visiting.pop()
                if upstream[0] is False:
                    valid = False
            except Exception as ex:
                valid = False
                typ, _, tb = sys.exc_info()
                validated[o_id] = (False, [_error(
                    "exception_during_inner_validation", "Exception when validating inner node", str(ex),
                    input_name=x, input_config=info, exception_message=str(ex), exception_type=full_type_name(typ),
                    traceback=traceback.format_tb(tb), linked_node=val,
                )], o_id)  # fmt: skip
            continue
        if isinstance(val, dict) and "__value__" in val:  # list widget values arrive wrapped
            val = inputs[x] = val["__value__"]
        try:
            val, error = _check_value(x, val, input_type, extra_info, info, validate_args, has_kwargs)
            inputs[x] = val
        except Exception as ex:
            errors.append(_error(
                "invalid_input_type", f"Failed to convert an input value to a {input_type} value", f"{x}, {val}, {ex}",
                input_name=x, input_config=info, received_value=val, exception_message=str(ex),
            ))  # fmt: skip
            continue
        if error is not None:
            errors.append(error)
    if validate_args or has_kwargs:
        input_data_all, _ = get_input_data(inputs, obj_class, unique_id)
        filtered = {k: v for k, v in input_data_all.items() if k in validate_args or has_kwargs}
        if "input_types" in validate_args:
            filtered["input_types"] = [received_types]
        results = map_node_over_list(obj_class, filtered, "VALIDATE_INPUTS")
        for x in filtered or (None,):  # a VALIDATE_INPUTS that takes no input still reports its failure
            for r in results:
                if r is not True:
                    details = ("" if x is None else x) if r is False else (str(r) if x is None else f"{x} - {r}")
                    extra = {} if x is None else {"input_name": x}
                    errors.append(
                        _error("custom_validation_failed", "Custom validation failed for node", details, **extra)
                    )
    # a dependency cycle found below this node may already have put its error here: joined, as ComfyUI does
    ok, found, _ = validated.get(unique_id, (True, [], unique_id))
    ret = (ok and valid is True and not errors, found + [e for e in errors if e not in found], unique_id)
    validated[unique_id] = ret
    return ret


def validate_prompt(prompt: dict, node_classes: dict[str, type] | None = None, partial_execution_list=None):
    """execution.py `validate_prompt` -> (valid, error, good output ids, node_errors)."""
    node_classes = (
        dict(getattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS", {})) if node_classes is None else node_classes
    )
    outputs = set()
    for x in prompt:
        # "missing_node_type" in current ComfyUI ("invalid_prompt", another message, up to 0.3.64)
        if "class_type" not in prompt[x]:
            title = prompt[x].get("_meta", {}).get("title")
            message = f"Node '{title or f'ID #{x}'}' has no class_type. The workflow may be corrupted or a custom node is missing."
            error = _error(
                "missing_node_type", message, f"Node ID '#{x}'", node_id=x, class_type=None, node_title=title
            )
            return (False, error, [], {})
        class_type = prompt[x]["class_type"]
        class_ = node_classes.get(class_type)
        if class_ is None:
            title = prompt[x].get("_meta", {}).get("title", class_type)
            message = f"Node '{title}' not found. The custom node may not be installed."
            error = _error(
                "missing_node_type", message, f"Node ID '#{x}'", node_id=x, class_type=class_type, node_title=title
            )
            return (False, error, [], {})
        if getattr(class_, "OUTPUT_NODE", False) is True and (
            partial_execution_list is None or x in partial_execution_list
        ):
            outputs.add(x)
    if not outputs:
        return (False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {})
    good_outputs, failures, node_errors, validated = set(), [], {}, {}
    for o in sorted(outputs):
        try:
            valid, reasons = validate_inputs(prompt, o, validated, node_classes)[:2]
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [_error(
                "exception_during_validation", "Exception when validating node", str(ex),
                exception_type=full_type_name(typ), traceback=traceback.format_tb(tb),
            )]  # fmt: skip
            validated[o] = (False, reasons, o)
        if valid is True:
            good_outputs.add(o)
            continue
        failures.append((o, reasons))
        for node_id, (ok, node_reasons, _) in validated.items():
            # Nodes downstream of an invalid one are invalid without reasons of their own: not reported.
            if ok is not True and node_reasons:
                entry = node_errors.setdefault(
                    node_id,
                    {"errors": node_reasons, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"]},
                )
                entry["dependent_outputs"].append(o)
    if not good_outputs:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errors in failures for e in errors)
        return (
            False,
            _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
            [],
            node_errors,
        )
    return (True, None, sorted(good_outputs), node_errors)
