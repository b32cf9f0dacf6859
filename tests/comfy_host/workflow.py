"""UI workflow (litegraph JSON, version 0.4) -> API prompt, as the frontend's `graphToPrompt` does it
(Comfy-Org/ComfyUI_frontend `src/utils/executionUtil.ts`), using `/object_info` for the widget layout."""

from __future__ import annotations

import dataclasses

MODE_NEVER = 2  # "muted": LGraphEventMode.NEVER
MODE_BYPASS = 4  # LGraphEventMode.BYPASS
VIRTUAL_NODES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}  # frontend-only (`isVirtualNode`)
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


@dataclasses.dataclass
class _Link:
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _links(workflow: dict) -> dict[int, _Link]:
    links = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            keys = ("origin_id", "origin_slot", "target_id", "target_slot", "type")
            links[link["id"]] = _Link(*(link.get(k) for k in keys))
        else:
            links[link[0]] = _Link(*link[1:6])
    return links


def _nullish(value, default):
    """JavaScript's `value ?? default`."""
    return default if value is None else value


def _widget_slots(info: dict) -> list[tuple[str, str]]:
    """(kind, input name) for every value a node's `widgets_values` holds, in widget order.

    Widgets are made in `input_order` (required, then optional) for widget-typed inputs without
    `forceInput`. useIntWidget adds a control widget when `control_after_generate ?? name in
    ("seed", "noise_seed")`; useComboWidget when `control_after_generate`; an `image_upload` (etc.)
    combo is followed by its upload button, whose value ("image") is saved too. Kinds "force" and
    "force_control" are the dummy values pre-1.16 frontends saved for forceInput inputs
    (`migrateWidgetsValues`)."""
    slots = []
    for category in ("required", "optional"):
        for name in info["input_order"].get(category, []):
            spec = info["input"][category][name]
            input_type, options = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
            is_combo = isinstance(input_type, list) or input_type == "COMBO"
            if is_combo:
                control = bool(options.get("control_after_generate"))
            elif input_type == "INT":
                control = bool(_nullish(options.get("control_after_generate"), name in ("seed", "noise_seed")))
            else:
                control = False
            if not (is_combo or input_type in WIDGET_TYPES):
                continue
            if options.get("forceInput"):
                seed_like = options.get("control_after_generate") or name in ("seed", "noise_seed")
                slots += [("force", name)] + ([("force_control", name)] if seed_like else [])
                continue
            slots.append(("value", name))
            if control:
                slots.append(("control", name))
            if is_combo and any(options.get(key) for key in UPLOAD_OPTIONS):
                slots.append(("upload", name))
    return slots


def widget_inputs(node: dict, info: dict) -> dict:
    """Widget name -> value for one node. The saved list is matched against the layouts the frontend
    can have written (newest first); if none has the right length the newest is used positionally."""
    values = node.get("widgets_values")
    slots = _widget_slots(info)
    if isinstance(values, dict):  # some extensions save widgets by name
        return {name: values[name] for kind, name in slots if kind == "value" and name in values}
    values = list(values or [])
    layouts = [
        {"value", "control", "upload"},
        {"value", "control"},
        {"value", "control", "force", "force_control", "upload"},
        {"value", "control", "force", "force_control"},
    ]
    chosen = next((k for k in layouts if sum(s[0] in k for s in slots) == len(values)), layouts[0])
    inputs = {}
    for (kind, name), value in zip([s for s in slots if s[0] in chosen], values):
        if kind == "value":
            # Arrays mean links in a prompt, so graphToPrompt wraps array widget values.
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
    return inputs


def _preview_widgets(info: dict) -> dict:
    """Values of widgets the frontend adds on its own and graphToPrompt sends: the "video-preview" DOM
    widget of a `video_upload` combo, sent as "" (useNodePreview's addVideoDomWidget sets
    `widget.serialize = false`, which keeps it out of widgets_values, but graphToPrompt only skips widgets
    whose `options.serialize === false`). The browser adds it once the video has loaded; ComfyUI ignores
    inputs a node does not declare (execution.py `get_input_data`)."""
    for category in ("required", "optional"):
        for spec in info["input"].get(category, {}).values():
            if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("video_upload"):
                return {"video-preview": ""}
    return {}


def _resolve(link_id, want_type: str, links: dict[int, _Link], nodes_by_id: dict) -> tuple[str, object] | None:
    """Follows graphToPrompt's loop over bypassed and virtual parents.
    -> ("link", [origin id, slot]) | ("value", primitive value) | None (no input)."""
    link = links.get(link_id)
    while link is not None:
        parent = nodes_by_id.get(link.origin_id)
        if parent is None:
            return None
        if parent["type"] == "PrimitiveNode":
            # applyToGraph writes the primitive's value into the target widget before serialising.
            return ("value", (parent.get("widgets_values") or [None])[0])
        if parent["type"] in VIRTUAL_NODES:  # Reroute: take the link into its own input
            entries = parent.get("inputs") or []
            link = links.get(entries[link.origin_slot].get("link")) if link.origin_slot < len(entries) else None
            continue
        if parent.get("mode") == MODE_BYPASS:
            # "Bypass nodes by finding first input with matching type", the same slot index first.
            entries = parent.get("inputs") or []
            indexes = [link.origin_slot] + list(range(len(entries)))
            match = next((i for i in indexes if i < len(entries) and entries[i].get("type") == want_type), None)
            if match is None:
                return None
            link = links.get(entries[match].get("link"))
            continue
        return ("link", [str(link.origin_id), int(link.origin_slot)])
    return None


def ui_to_prompt(workflow: dict, object_info: dict) -> dict:
    """API prompt {node id: {"inputs", "class_type", "_meta"}} from a UI workflow.

    Muted and bypassed nodes are not sent; links through bypassed nodes are re-routed to the first
    input of the same type; Reroute/PrimitiveNode/Note/MarkdownNote are resolved away; widget values
    come first and links overwrite them; inputs linked to a node that was not sent are deleted."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise NotImplementedError("subgraphs are not supported by the harness")
    nodes_by_id = {node["id"]: node for node in workflow.get("nodes", [])}
    links = _links(workflow)
    prompt: dict[str, dict] = {}
    for node in workflow.get("nodes", []):
        if node["type"] in VIRTUAL_NODES or node.get("mode") in (MODE_NEVER, MODE_BYPASS):
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"node #{node['id']}: type {node['type']!r} is not in object_info")
        inputs = {**widget_inputs(node, info), **_preview_widgets(info)}
        for entry in node.get("inputs") or []:
            if entry.get("link") is None:
                continue
            resolved = _resolve(entry["link"], entry.get("type"), links, nodes_by_id)
            if resolved is not None:
                kind, value = resolved
                wrap = kind == "value" and isinstance(value, list)
                inputs[entry["name"]] = {"__value__": value} if wrap else value
        title = node.get("title") or info.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    for entry in prompt.values():  # "Remove inputs connected to removed nodes"
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt
