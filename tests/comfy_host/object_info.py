"""`/object_info` as ComfyUI's server builds it (server.py, `PromptServer.__init__.node_info`)."""

from __future__ import annotations

import sys


def _registry() -> tuple[dict[str, type], dict[str, str]]:
    nodes = sys.modules.get("nodes")
    return dict(getattr(nodes, "NODE_CLASS_MAPPINGS", {})), dict(getattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", {}))


def node_info(node_class: str, obj_class: type, display_names: dict[str, str]) -> dict:
    """Follows server.py `node_info` for V1 nodes, key for key."""
    info = {}
    info["input"] = obj_class.INPUT_TYPES()
    info["input_order"] = {key: list(value.keys()) for (key, value) in obj_class.INPUT_TYPES().items()}
    info["is_input_list"] = getattr(obj_class, "INPUT_IS_LIST", False)
    info["output"] = obj_class.RETURN_TYPES
    info["output_is_list"] = getattr(obj_class, "OUTPUT_IS_LIST", [False] * len(obj_class.RETURN_TYPES))
    info["output_name"] = getattr(obj_class, "RETURN_NAMES", info["output"])
    info["name"] = node_class
    info["display_name"] = display_names.get(node_class, node_class)
    info["description"] = getattr(obj_class, "DESCRIPTION", "")
    info["python_module"] = getattr(obj_class, "RELATIVE_PYTHON_MODULE", "nodes")
    info["category"] = getattr(obj_class, "CATEGORY", "sd")
    # `== True` in ComfyUI: OUTPUT_NODE = 1 counts, OUTPUT_NODE = "yes" does not.
    info["output_node"] = bool(hasattr(obj_class, "OUTPUT_NODE") and obj_class.OUTPUT_NODE == True)  # noqa: E712
    info["has_intermediate_output"] = bool(
        hasattr(obj_class, "HAS_INTERMEDIATE_OUTPUT") and obj_class.HAS_INTERMEDIATE_OUTPUT == True  # noqa: E712
    )
    if hasattr(obj_class, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = obj_class.OUTPUT_TOOLTIPS
    if getattr(obj_class, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(obj_class, "EXPERIMENTAL", False):
        info["experimental"] = True
    if getattr(obj_class, "DEV_ONLY", False):
        info["dev_only"] = True
    if hasattr(obj_class, "API_NODE"):
        info["api_node"] = obj_class.API_NODE
    info["search_aliases"] = getattr(obj_class, "SEARCH_ALIASES", [])
    if hasattr(obj_class, "ESSENTIALS_CATEGORY"):
        info["essentials_category"] = obj_class.ESSENTIALS_CATEGORY
    return info


def object_info(node_classes: dict[str, type] | None = None, display_names: dict[str, str] | None = None) -> dict:
    """Like `GET /object_info`. Defaults to the installed fake `nodes` registry (core nodes plus loaded
    packs). Unlike the server, an exception in one node's INPUT_TYPES is raised, not logged."""
    registry_classes, registry_names = _registry()
    node_classes = registry_classes if node_classes is None else node_classes
    names = {**registry_names, **(display_names or {})}
    return {name: node_info(name, cls, names) for name, cls in node_classes.items()}
