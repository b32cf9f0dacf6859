"""Stand-in for ComfyUI's `folder_paths.py`: the model folder registry and the input/output folders.

`configure(models, input, output, temp)` is the harness's own entry (ComfyUI sets these from its
command line); everything else keeps folder_paths' names, signatures and rules.
"""

import mimetypes
import os
import time

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

# name -> ([paths], {extensions}); an empty extension set lists every file (filter_files_extensions).
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
models_dir = ""
output_directory = ""
input_directory = ""
temp_directory = ""

_STANDARD_FOLDERS = {
    "checkpoints": ["checkpoints"],
    "loras": ["loras"],
    "vae": ["vae"],
    "text_encoders": ["text_encoders", "clip"],
    "diffusion_models": ["unet", "diffusion_models"],
    "clip_vision": ["clip_vision"],
    "upscale_models": ["upscale_models"],
    "vae_approx": ["vae_approx"],
}


def configure(models: str, input_dir: str, output_dir: str, temp_dir: str) -> None:
    global models_dir, input_directory, output_directory, temp_directory
    models_dir, input_directory, output_directory, temp_directory = models, input_dir, output_dir, temp_dir
    folder_names_and_paths.clear()
    for name, subfolders in _STANDARD_FOLDERS.items():
        folder_names_and_paths[name] = ([os.path.join(models, s) for s in subfolders], set(supported_pt_extensions))


def map_legacy(folder_name: str) -> str:
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(folder_name, folder_name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def filter_files_extensions(files, extensions) -> list[str]:
    return sorted(f for f in files if os.path.splitext(f)[-1].lower() in extensions or len(extensions) == 0)


def filter_files_content_types(files, content_types) -> list[str]:
    def content_type(name):
        mime = mimetypes.guess_type(name)[0] or ""
        return mime.split("/")[0]

    return [f for f in files if content_type(f) in content_types]


def _recursive_files(directory: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if d != ".git"]
        found += [os.path.relpath(os.path.join(root, f), directory) for f in files]
    return found


def get_filename_list(folder_name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[map_legacy(folder_name)]
    names: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            names.update(_recursive_files(path))
    return sorted(filter_files_extensions(names, extensions))


def get_full_path(folder_name: str, filename: str) -> str | None:
    """Files only: a directory of that name is not found (as in ComfyUI)."""
    folder_name = map_legacy(folder_name)
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for path in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(path, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_output_directory() -> str:
    return output_directory


def get_input_directory() -> str:
    return input_directory


def get_temp_directory() -> str:
    return temp_directory


def set_output_directory(path: str) -> None:
    global output_directory
    output_directory = path


def set_input_directory(path: str) -> None:
    global input_directory
    input_directory = path


def annotated_filepath(name: str) -> tuple[str, str | None]:
    if name.endswith("[output]"):
        return name[:-9], get_output_directory()
    if name.endswith("[input]"):
        return name[:-8], get_input_directory()
    if name.endswith("[temp]"):
        return name[:-7], get_temp_directory()
    return name, None


def is_within_directory(directory: str, target: str) -> bool:
    """`target` resolves (links followed) to a path inside `directory`."""
    try:
        directory, target = os.path.realpath(directory), os.path.realpath(target)
        return os.path.commonpath((directory, target)) == directory
    except ValueError:
        return False


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """An absolute path inside the annotated (or default, else input) folder; ValueError for a name that leaves
    it, e.g. "../x.png" (current ComfyUI; up to 0.3.64 the joined path was returned as it was)."""
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else get_input_directory()
    filepath = os.path.abspath(os.path.join(base_dir, name))
    if not is_within_directory(base_dir, filepath):
        raise ValueError(f"Invalid file path: {name!r}")
    return filepath


def exists_annotated_filepath(name: str) -> bool:
    name, base_dir = annotated_filepath(name)
    base_dir = base_dir or get_input_directory()
    filepath = os.path.abspath(os.path.join(base_dir, name))
    return is_within_directory(base_dir, filepath) and os.path.exists(filepath)


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0):
    """-> (full_output_folder, filename, counter, subfolder, filename_prefix); counter continues past existing files."""

    def map_filename(filename):
        prefix_len = len(os.path.basename(filename_prefix))
        try:
            digits = int(filename[prefix_len + 1 :].split("_")[0])
        except ValueError:
            digits = 0
        return digits, filename[: prefix_len + 1]

    if "%" in filename_prefix:
        now = time.localtime()
        for key, value in {
            "%width%": image_width,
            "%height%": image_height,
            "%year%": now.tm_year,
            "%month%": f"{now.tm_mon:02}",
            "%day%": f"{now.tm_mday:02}",
        }.items():
            filename_prefix = filename_prefix.replace(key, str(value))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception(f"**** ERROR: Saving image outside the output folder is not allowed. {full_output_folder}")
    try:
        taken = [
            digits
            for digits, prefix in map(map_filename, os.listdir(full_output_folder))
            if prefix[:-1] == filename and prefix[-1:] == "_"
        ]
        counter = max(taken) + 1 if taken else 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix
