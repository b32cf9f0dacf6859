"""Installing the fake ComfyUI into `sys.modules`, and loading a pack the way ComfyUI does."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import shutil
import sys
import types
from collections.abc import Iterator

FAKE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_comfy")
FAKE_TOP_LEVEL = ("comfy", "comfy_extras", "folder_paths", "latent_preview", "server", "nodes")


@dataclasses.dataclass
class FakeComfy:
    """The installed stand-ins, the recording server and the folders they use."""

    modules: dict[str, types.ModuleType]
    models_dir: str
    input_dir: str
    output_dir: str
    temp_dir: str

    @property
    def server(self):
        return self.modules["server"].PromptServer.instance

    @property
    def nodes(self) -> types.ModuleType:
        return self.modules["nodes"]

    @property
    def model_management(self) -> types.ModuleType:
        return self.modules["comfy.model_management"]

    @property
    def messages(self) -> list:
        return self.server.messages

    def interrupt(self, value: bool = True) -> None:
        """What ComfyUI's /interrupt route does: `nodes.interrupt_processing()`."""
        self.nodes.interrupt_processing(value)


def _progress_hook(server_module, model_management):
    """Follows main.py's `hijack_progress`: check the interrupt flag, send "progress", then the preview."""
    server = server_module.PromptServer.instance

    def hook(value, total, preview_image, prompt_id=None, node_id=None):
        model_management.throw_exception_if_processing_interrupted()
        prompt_id = prompt_id if prompt_id is not None else server.last_prompt_id
        node_id = node_id if node_id is not None else server.last_node_id
        progress = {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id}
        server.send_sync("progress", progress, server.client_id)
        if preview_image is not None:
            server.send_sync(server_module.BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, preview_image, server.client_id)

    return hook


def _is_ours(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in FAKE_TOP_LEVEL)


@contextlib.contextmanager
def install_fake_comfy(
    models_dir: str, input_dir: str, output_dir: str, temp_dir: str | None = None
) -> Iterator[FakeComfy]:
    """Puts fresh fake ComfyUI modules into `sys.modules` (shadowing e.g. this repo's own `nodes`), and
    restores everything on exit: modules it shadowed come back, and packs loaded meanwhile are removed."""
    temp_dir = temp_dir or os.path.join(os.path.dirname(os.path.abspath(output_dir)), "temp")
    for path in (models_dir, input_dir, output_dir, temp_dir):
        os.makedirs(path, exist_ok=True)
    shadowed = {name: module for name, module in sys.modules.items() if _is_ours(name)}
    for name in shadowed:
        del sys.modules[name]
    sys.path.insert(0, FAKE_DIR)
    importlib.invalidate_caches()
    fake = None
    try:
        names = ("comfy.cli_args", "comfy.model_management", "comfy.utils", "folder_paths")
        modules = {name: importlib.import_module(name) for name in names}
        modules["folder_paths"].configure(models_dir, input_dir, output_dir, temp_dir)
        for name in ("latent_preview", "server", "nodes"):
            modules[name] = importlib.import_module(name)
        modules["comfy"] = sys.modules["comfy"]
        modules["server"].PromptServer()
        modules["nodes"].init_extra_nodes()
        hook = _progress_hook(modules["server"], modules["comfy.model_management"])
        modules["comfy.utils"].set_progress_bar_global_hook(hook)
        fake = FakeComfy(modules, models_dir, input_dir, output_dir, temp_dir)
        yield fake
    finally:
        sys.path.remove(FAKE_DIR)
        nodes = sys.modules.get("nodes")
        loaded_dirs = getattr(nodes, "LOADED_MODULE_DIRS", {}).values() if fake else ()
        loaded = [path.replace(".", "_x_") for path in loaded_dirs]
        for name, module in list(sys.modules.items()):
            from_fake = (getattr(module, "__file__", None) or "").startswith(FAKE_DIR)
            from_pack = any(name == top or name.startswith(top + ".") for top in loaded)
            if _is_ours(name) or from_fake or from_pack:
                del sys.modules[name]
        sys.modules.update(shadowed)
        importlib.invalidate_caches()


@dataclasses.dataclass
class LoadedPack:
    module: types.ModuleType
    module_name: str
    path: str
    node_class_mappings: dict[str, type]
    display_name_mappings: dict[str, str]
    web_directory: str | None


def load_pack(pack_dir: str, custom_nodes_dir: str, folder_name: str = "ComfyUI-EasyAnimate-test") -> LoadedPack:
    """Links `pack_dir` as `custom_nodes_dir/folder_name` and loads it like `nodes.load_custom_node`:
    `spec_from_file_location(<path with "." -> "_x_">, <path>/__init__.py)`, `sys.modules[name] = module`,
    exec, then NODE_CLASS_MAPPINGS (core names are not overridden), RELATIVE_PYTHON_MODULE, display names
    and WEB_DIRECTORY. Needs `install_fake_comfy` active. Errors propagate instead of being logged."""
    nodes = sys.modules.get("nodes")
    if nodes is None or not getattr(nodes, "__file__", "").startswith(FAKE_DIR):
        raise RuntimeError("load_pack needs install_fake_comfy(...) to be active")
    custom_nodes_dir = os.path.abspath(custom_nodes_dir)
    os.makedirs(custom_nodes_dir, exist_ok=True)
    module_path = os.path.join(custom_nodes_dir, folder_name)
    if not os.path.exists(module_path):
        try:
            os.symlink(os.path.abspath(pack_dir), module_path, target_is_directory=True)
        except OSError:
            ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "output", "models")
            shutil.copytree(pack_dir, module_path, ignore=ignore)
    module_name = module_path.replace(".", "_x_")
    base_node_names = set(nodes.NODE_CLASS_MAPPINGS)
    nodes.load_custom_node(module_path, base_node_names, module_parent="custom_nodes", raise_errors=True)
    module = sys.modules[module_name]
    web = nodes.EXTENSION_WEB_DIRS.get(folder_name)
    return LoadedPack(
        module=module,
        module_name=module_name,
        path=module_path,
        node_class_mappings=dict(getattr(module, "NODE_CLASS_MAPPINGS", None) or {}),
        display_name_mappings=dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}),
        web_directory=web,
    )
