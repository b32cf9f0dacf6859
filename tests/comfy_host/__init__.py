"""A fake ComfyUI host for tests: loads the pack as ComfyUI does, builds /object_info, converts UI
workflows to prompts like the frontend, validates and executes prompts like execution.py.

    with install_fake_comfy(models, inputs, outputs) as comfy:
        pack = load_pack(repo_dir, tmp / "custom_nodes")
        info = object_info()
        prompt = ui_to_prompt(json.load(open(workflow)), info)
        result = execute_prompt(prompt)          # validates first; raises on errors
        result.outputs["9"]["images"]           # the UI outputs, per node
"""

from __future__ import annotations

from .execution import (
    NodeExecutionError,
    PromptExecutor,
    PromptValidationError,
    RunResult,
    execute_prompt,
    get_input_data,
    map_node_over_list,
    merge_result_data,
)
from .install import FAKE_DIR, FakeComfy, LoadedPack, install_fake_comfy, load_pack
from .object_info import node_info, object_info
from .validation import validate_inputs, validate_node_input, validate_prompt
from .workflow import ui_to_prompt, widget_inputs


def run_workflow(workflow: dict, executor: PromptExecutor | None = None, **kwargs) -> RunResult:
    """Queue a UI workflow as the browser does: graphToPrompt, then POST /prompt with the workflow in
    extra_data["extra_pnginfo"] (what savers embed), then validation and execution."""
    prompt = ui_to_prompt(workflow, object_info())
    extra_data = {"extra_pnginfo": {"workflow": workflow}}
    return (executor or PromptExecutor()).execute(prompt, extra_data=extra_data, **kwargs)


__all__ = [
    "FAKE_DIR",
    "FakeComfy",
    "LoadedPack",
    "NodeExecutionError",
    "PromptExecutor",
    "PromptValidationError",
    "RunResult",
    "execute_prompt",
    "get_input_data",
    "install_fake_comfy",
    "load_pack",
    "map_node_over_list",
    "merge_result_data",
    "node_info",
    "object_info",
    "run_workflow",
    "ui_to_prompt",
    "validate_inputs",
    "validate_node_input",
    "validate_prompt",
    "widget_inputs",
]
