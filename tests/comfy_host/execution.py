"""Running a prompt as ComfyUI's `execution.py` does (V1 nodes, synchronous).

Kept from ComfyUI: validation first and only valid outputs run; the order of `ExecutionList` with
`ux_friendly_pick_node`; `get_input_data` (links, hidden inputs); `_map_node_over_list` (INPUT_IS_LIST,
list slicing that repeats the last item); `merge_result_data` (OUTPUT_IS_LIST); {"ui", "result"}
returns; `before_node_execution` interrupt checks; the interrupt flag reset and the prompt's preview method
(extra_data["preview_method"]) set when a run starts;
outputs cached by input signature and IS_CHANGED across runs of one `PromptExecutor`; everything
under `torch.inference_mode()`; the server messages. Not kept: lazy inputs, subgraph expansion, async
nodes, V3 nodes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import traceback
import uuid

import torch


class PromptValidationError(Exception):
    def __init__(self, error: dict, node_errors: dict):
        lines = [f"{error['message']}: {error['details']}"]
        for node_id, entry in node_errors.items():
            lines += [f"  #{node_id} {entry['class_type']}: {e['type']}: {e['details']}" for e in entry["errors"]]
        super().__init__("\n".join(lines))
        self.error, self.node_errors = error, node_errors


class DependencyCycleError(Exception):
    """comfy_execution/graph.py's: execution found nodes waiting on each other."""


class NodeExecutionError(Exception):
    def __init__(self, node_id: str, class_type: str, details: dict):
        super().__init__(
            f"node #{node_id} ({class_type}) failed: {details['exception_type']}: {details['exception_message']}"
        )
        self.node_id, self.class_type, self.details = node_id, class_type, details


def _comfy(name: str):
    module = sys.modules.get(name)
    if module is None:
        raise RuntimeError(f"the harness needs install_fake_comfy(...) active (no {name!r} module)")
    return module


def is_link(value) -> bool:
    """comfy_execution/graph_utils.py `is_link`: [str node id, int or float slot]."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], (int, float))
    )


def get_input_data(
    inputs: dict, class_def: type, unique_id: str, outputs: dict | None = None, prompt=None, extra_data=None
):
    """execution.py `get_input_data` -> (input_data_all, missing_keys). Every value is a list (one
    item per call); a link whose upstream output is unknown gives (None,) and is marked missing."""
    valid_inputs = class_def.INPUT_TYPES()
    extra_data = extra_data or {}
    input_data_all, missing = {}, {}
    for x, value in inputs.items():
        known = any(x in valid_inputs.get(c, {}) for c in ("required", "optional", "hidden"))
        if is_link(value):
            upstream = None if outputs is None else outputs.get(value[0])
            if upstream is None or value[1] >= len(upstream):
                input_data_all[x], missing[x] = (None,), True
                continue
            input_data_all[x] = upstream[value[1]]
        elif known:
            input_data_all[x] = [value]
    for x, kind in valid_inputs.get("hidden", {}).items():
        hidden = {
            "PROMPT": prompt if prompt is not None else {},
            "DYNPROMPT": None,
            "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"),
            "UNIQUE_ID": unique_id,
        }
        if kind in hidden:
            input_data_all[x] = [hidden[kind]]
    return input_data_all, missing


def map_node_over_list(obj, input_data_all: dict, func: str, allow_interrupt: bool = False) -> list:
    """execution.py `_async_map_node_over_list`: one call with whole lists (INPUT_IS_LIST) or one call
    per index of the longest list, shorter lists repeating their last item."""
    nodes = sys.modules.get("nodes")

    def call(kwargs):
        if allow_interrupt:
            nodes.before_node_execution()
        return getattr(obj, func)(**kwargs)

    if getattr(obj, "INPUT_IS_LIST", False):
        return [call(input_data_all)]
    max_len = max((len(v) for v in input_data_all.values()), default=0)
    if max_len == 0:
        return [call({})]
    return [call({k: v[i if len(v) > i else -1] for k, v in input_data_all.items()}) for i in range(max_len)]


def merge_result_data(results: list, obj) -> list[list]:
    """execution.py `merge_result_data`: OUTPUT_IS_LIST outputs are concatenated, the others collected."""
    output_is_list = getattr(obj, "OUTPUT_IS_LIST", [False] * len(results[0]))
    merged = []
    for i, is_list in zip(range(len(results[0])), output_is_list):
        merged.append([x for o in results for x in o[i]] if is_list else [o[i] for o in results])
    return merged


def get_output_data(obj, input_data_all: dict) -> tuple[list, dict]:
    """execution.py `get_output_data` / `get_output_from_returns` -> (outputs, ui)."""
    results, uis = [], []
    for r in map_node_over_list(obj, input_data_all, obj.FUNCTION, allow_interrupt=True):
        if isinstance(r, dict):
            if "ui" in r:
                uis.append(r["ui"])
            if "result" in r:
                results.append(r["result"])
        else:
            results.append(r)
    output = merge_result_data(results, obj) if results else []
    ui = {k: [y for x in uis for y in x[k]] for k in uis[0].keys()} if uis else {}
    return output, ui


def _pick_node(ready: list[str], pending: dict[str, set], prompt: dict, classes: dict) -> str:
    """comfy_execution/graph.py `ux_friendly_pick_node`: an output node first, then a node feeding an
    output node, then one two steps away, else the first ready node."""

    def is_output(node_id):
        return getattr(classes[prompt[node_id]["class_type"]], "OUTPUT_NODE", False) == True  # noqa: E712

    def blocked_by(node_id):
        return [n for n, blockers in pending.items() if node_id in blockers]

    for rule in (
        lambda n: is_output(n),
        lambda n: any(is_output(b) for b in blocked_by(n)),
        lambda n: any(is_output(b2) for b in blocked_by(n) for b2 in blocked_by(b)),
    ):
        for node_id in ready:
            if rule(node_id):
                return node_id
    return ready[0]


@dataclasses.dataclass
class RunResult:
    prompt_id: str
    outputs: dict[str, dict]  # node id -> merged "ui" dict (the history "outputs"), cached nodes included
    executed: list[str]  # node ids that ran, in order
    cached: list[str]  # node ids served from the cache
    results: dict[str, list]  # node id -> output lists (one list per output slot)
    messages: list[tuple]  # (event, data) sent to the PromptServer during the run
    node_errors: dict
    error: dict | None = None

    def events(self, name) -> list:
        return [data for event, data in self.messages if event == name]

    @property
    def previews(self) -> list[tuple[str, tuple]]:
        """(node id, ("JPEG", PIL image, max size)) for every preview, in order."""
        preview_event = _comfy("server").BinaryEventTypes.UNENCODED_PREVIEW_IMAGE
        found, node = [], None
        for event, data in self.messages:
            if event == "progress":
                node = data["node"]
            elif event == preview_event:
                found.append((node, data))
        return found


class PromptExecutor:
    """Keeps ComfyUI's caches between prompts: outputs and UI by input signature, node objects by id."""

    def __init__(self, node_classes: dict[str, type] | None = None):
        self.node_classes = node_classes
        self.outputs: dict = {}
        self.ui: dict = {}
        self.objects: dict = {}

    def _signature(self, prompt, node_id, classes, memo):
        """CacheKeySetInputSignature in spirit: class, IS_CHANGED, constants and upstream signatures."""
        if node_id in memo:
            return memo[node_id]
        memo[node_id] = ("ancestor", node_id)  # a link back into a cycle (ComfyUI names ancestors by index)
        node, class_def = prompt[node_id], classes[prompt[node_id]["class_type"]]
        parts = [node["class_type"]]
        if hasattr(class_def, "IS_CHANGED"):
            # execution.py IsChangedCache: a value the prompt already holds is used as is; otherwise IS_CHANGED's
            # results (NaN when it raised) are written into the prompt's node, so the PROMPT that savers embed
            # and /history returns carry "is_changed"
            if "is_changed" not in node:
                data, _ = get_input_data(node["inputs"], class_def, node_id)
                try:
                    node["is_changed"] = map_node_over_list(class_def, data, "IS_CHANGED")
                except Exception:
                    node["is_changed"] = float("nan")
            changed = node["is_changed"] if isinstance(node["is_changed"], list) else [node["is_changed"]]
            # ComfyUI keeps the raw values in the signature: a NaN equals nothing, so the node (and everything
            # downstream) runs again on every queue; a fresh NaN object stands for it here
            nan = any(isinstance(v, float) and math.isnan(v) for v in changed)
            parts.append(float("nan") if nan else repr(changed))
        if getattr(class_def, "NOT_IDEMPOTENT", False):
            parts.append(node_id)
        for name, value in sorted(node["inputs"].items()):
            if is_link(value):
                parts.append((name, self._signature(prompt, value[0], classes, memo), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=str)))
        memo[node_id] = tuple(parts)
        return memo[node_id]

    def execute(
        self, prompt: dict, extra_data: dict | None = None, validate: bool = True, raise_errors: bool = True
    ) -> RunResult:
        from .validation import validate_prompt

        mm, nodes, server = _comfy("comfy.model_management"), _comfy("nodes"), _comfy("server").PromptServer.instance
        classes = self.node_classes if self.node_classes is not None else nodes.NODE_CLASS_MAPPINGS
        prompt = json.loads(json.dumps(prompt))  # the server gets JSON; validation edits it in place
        extra_data = extra_data or {}
        node_errors = {}
        outputs_to_run = [
            k for k, v in prompt.items() if getattr(classes.get(v["class_type"]), "OUTPUT_NODE", 0) is True
        ]
        if validate:
            valid, error, outputs_to_run, node_errors = validate_prompt(prompt, classes)
            if not valid:
                raise PromptValidationError(error, node_errors)
        prompt_id = str(uuid.uuid4())
        first_message = len(server.messages)
        # execute_async: the browser's preview setting for this prompt ("default" or none: --preview-method)
        _comfy("latent_preview").set_preview_method(extra_data.get("preview_method"))
        nodes.interrupt_processing(False)  # execute_async resets the flag: a stale interrupt is dropped
        server.last_prompt_id = prompt_id
        server.send_sync("execution_start", {"prompt_id": prompt_id}, server.client_id)
        memo, results, executed = {}, {}, []
        signatures = {n: self._signature(prompt, n, classes, memo) for n in prompt}
        cached = [n for n in prompt if signatures[n] in self.outputs]
        server.send_sync("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, server.client_id)
        pending: dict[str, set] = {}
        stack = list(outputs_to_run)
        while stack:  # TopologicalSort.add_node: everything an output needs that is not cached
            node_id = stack.pop()
            if node_id in pending:
                continue
            pending[node_id] = set()
            for value in prompt[node_id]["inputs"].values():
                if is_link(value) and signatures[value[0]] not in self.outputs:
                    pending[node_id].add(value[0])
                    stack.append(value[0])
        error = None
        with torch.inference_mode():
            while pending:
                ready = [n for n, blockers in pending.items() if not blockers]
                if not ready:  # only without validation, which reports cycles first
                    error = self._cycle_error(prompt, pending, prompt_id, executed)
                    break
                node_id = _pick_node(ready, pending, prompt, classes)
                if node_id in cached:  # a cached output node: its stored UI is sent again
                    message = {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
                    server.send_sync(
                        "executed", {**message, "output": self.ui.get(signatures[node_id])}, server.client_id
                    )
                else:
                    error = self._run_node(prompt, node_id, classes, signatures, extra_data, prompt_id, executed)
                    if error is not None:
                        break
                    executed.append(node_id)
                del pending[node_id]
                for blockers in pending.values():
                    blockers.discard(node_id)
        for node_id in prompt:
            if signatures[node_id] in self.outputs:
                results[node_id] = self.outputs[signatures[node_id]]
        ui = {n: self.ui[signatures[n]] for n in prompt if signatures[n] in self.ui}
        if error is None:
            for node_id in cached:  # emit_cached_output: cached nodes with HAS_INTERMEDIATE_OUTPUT send their UI again
                class_def = classes[prompt[node_id]["class_type"]]
                intermediate = getattr(class_def, "HAS_INTERMEDIATE_OUTPUT", False) == True  # noqa: E712
                output_node = getattr(class_def, "OUTPUT_NODE", False) == True  # noqa: E712 (sent above)
                if intermediate and not output_node and node_id in ui:
                    message = {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
                    server.send_sync("executed", {**message, "output": ui[node_id]}, server.client_id)
            server.send_sync("execution_success", {"prompt_id": prompt_id}, server.client_id)
        messages = [(event, data) for event, data, _ in server.messages[first_message:]]
        result = RunResult(
            prompt_id, ui, executed, [n for n in cached if n in results], results, messages, node_errors, error
        )
        if error is not None and raise_errors:
            raise (
                error["exception"]
                if isinstance(error["exception"], mm.InterruptProcessingException)
                else NodeExecutionError(error["node_id"], prompt[error["node_id"]]["class_type"], error)
            ) from error["exception"]
        return result

    def _cycle_error(self, prompt, pending, prompt_id, executed) -> dict:
        """comfy_execution/graph.py `stage_node_execution` with nothing ready: a DependencyCycleError blamed on
        a waiting node, sent as "execution_error" (`handle_execution_error`)."""
        server = _comfy("server").PromptServer.instance
        cycle = DependencyCycleError("Dependency cycle detected")
        node_id = next(iter(pending))
        details = {
            "node_id": node_id,
            "exception_message": str(cycle),
            "exception_type": "graph.DependencyCycleError",
            "traceback": [],
            "current_inputs": [],
        }
        message = {"prompt_id": prompt_id, "node_type": prompt[node_id]["class_type"], "executed": list(executed)}
        server.send_sync("execution_error", {**message, **details}, server.client_id)
        return {**details, "exception": cycle}

    def _run_node(self, prompt, node_id, classes, signatures, extra_data, prompt_id, executed) -> dict | None:
        """execution.py `execute` for one node; returns the error details or None."""
        mm, server = _comfy("comfy.model_management"), _comfy("server").PromptServer.instance
        class_type = prompt[node_id]["class_type"]
        class_def = classes[class_type]
        outputs = {n: self.outputs[s] for n, s in signatures.items() if s in self.outputs}
        input_data_all = None
        try:
            input_data_all, _ = get_input_data(
                prompt[node_id]["inputs"], class_def, node_id, outputs, prompt, extra_data
            )
            server.last_node_id = node_id
            server.send_sync(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}, server.client_id
            )
            obj = self.objects.get((node_id, class_type))
            if obj is None:
                obj = self.objects[(node_id, class_type)] = class_def()
            output_data, output_ui = get_output_data(obj, input_data_all)
            if output_ui:
                self.ui[signatures[node_id]] = output_ui
                message = {"node": node_id, "display_node": node_id, "output": output_ui, "prompt_id": prompt_id}
                server.send_sync("executed", message, server.client_id)
            self.outputs[signatures[node_id]] = output_data
            return None
        except mm.InterruptProcessingException as iex:
            message = {"prompt_id": prompt_id, "node_id": node_id, "node_type": class_type, "executed": list(executed)}
            server.send_sync("execution_interrupted", message, server.client_id)
            return {"node_id": node_id, "exception": iex}
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            from .validation import full_type_name

            tips = ""
            if isinstance(ex, mm.OOM_EXCEPTION):
                tips = OOM_TIPS
                mm.unload_all_models()  # as execution.py does after an OOM
            details = {
                "node_id": node_id,
                "exception_message": f"{ex}\n{tips}",  # execution.py's: a newline (and OOM tips) follow
                "exception_type": full_type_name(typ),
                "traceback": traceback.format_tb(tb),
                "current_inputs": {k: [_format(x) for x in v] for k, v in (input_data_all or {}).items()},
            }
            message = {"prompt_id": prompt_id, "node_type": class_type, "executed": list(executed), **details}
            server.send_sync("execution_error", message, server.client_id)
            return {**details, "exception": ex}
        finally:
            server.last_node_id = None


OOM_TIPS = (  # execution.py `execute`'s tips for an OOM_EXCEPTION
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have "
    "accidentally set the batch_size to a large number."
)


def _format(x):
    """execution.py `format_value`."""
    return x if x is None or isinstance(x, (int, float, bool, str)) else str(x)


def execute_prompt(prompt: dict, node_classes: dict[str, type] | None = None, **kwargs) -> RunResult:
    """One prompt with a fresh cache (see `PromptExecutor.execute` for the options)."""
    return PromptExecutor(node_classes).execute(prompt, **kwargs)
