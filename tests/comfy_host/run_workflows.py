"""Run the shipped workflows (workflows/*.json) headless in the fake ComfyUI, on tiny checkpoints.

    python -m tests.comfy_host.run_workflows OUT_DIR      # or: from tests.comfy_host.run_workflows import main

`main(out_dir)` writes tiny checkpoints under `out_dir/.models`, example inputs under `out_dir/.input`,
loads the pack as ComfyUI would, runs every workflow with small sizes (`DEMO_OVERRIDES`) and leaves the
saved videos in `out_dir`. The tests use the same helpers.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(os.path.dirname(HERE))
WORKFLOWS_DIR = os.path.join(REPO_DIR, "workflows")
TINY_CHECKPOINTS = {"EasyAnimateV5.1-tiny-T2V": "T2V", "EasyAnimateV5.1-tiny-InP": "InP"}
CONTROL_CHECKPOINTS = {
    "EasyAnimateV5.1-tiny-Control": "Control",
    "EasyAnimateV5.1-tiny-Control-Camera": "Control-Camera",
}
DEMO_CHECKPOINTS = {**TINY_CHECKPOINTS, **CONTROL_CHECKPOINTS}  # what the shipped workflows name
START_IMAGE, END_IMAGE, INPUT_VIDEO = "easyanimate_start.png", "easyanimate_end.png", "easyanimate_input.mp4"
POSE_FILE = "easyanimate_camera_pan_left_zoom_in.txt"  # a CameraCtrl pose file made from two presets

# Per node type: widget values replaced to keep a CPU run short (the shipped values are for real models).
DEMO_OVERRIDES = {
    "EasyAnimateVideoSampler": {"width": 64, "height": 48, "frames": 9, "steps": 4},
    "EasyAnimateImageToVideo": {"width": 64, "height": 48, "frames": 9},
    "EasyAnimateInpaintVideo": {"width": 64, "height": 48, "frames": 9},
    "EasyAnimateExtendVideo": {"width": 64, "height": 48, "frames": 9},
    "EasyAnimateControlVideo": {"width": 64, "height": 48, "frames": 9},
    "EasyAnimateCameraControl": {"width": 64, "height": 48, "frames": 9},
    "EasyAnimateTrajectory": {"width": 64, "height": 48, "frames": 9, "resample": True},
    "EasyAnimateCameraPreset": {"frames": 9},
    "EasyAnimateLoadCameraPose": {"frames": 9, "resample": True},
    "ImageFromBatch": {"length": 9},
    "ImageScale": {"width": 64, "height": 48},
}

log = logging.getLogger("EasyAnimate")


def workflow_paths() -> list[str]:
    return sorted(glob.glob(os.path.join(WORKFLOWS_DIR, "*.json")))


def load_workflow(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


TINY_LORA = "easyanimate_tiny_style_lora.safetensors"  # the LoRA workflow's default


def write_tiny_models(models_dir: str, checkpoints: dict[str, str] | None = None) -> None:
    """Tiny checkpoints under models/EasyAnimate/ (skipped when present): ``checkpoints`` {name: variant},
    by default the T2V and InP ones (DEMO_CHECKPOINTS has every one the shipped workflows name)."""
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    from easyanimate_core.testing import write_tiny_checkpoint

    for name, variant in (TINY_CHECKPOINTS if checkpoints is None else checkpoints).items():
        folder = os.path.join(models_dir, "EasyAnimate", name)
        if not os.path.isdir(folder):
            write_tiny_checkpoint(folder, version="V5.1", variant=variant)
    lora = os.path.join(models_dir, "loras", TINY_LORA)
    if not os.path.isfile(lora):
        from easyanimate_core.testing.lora import write_tiny_lora
        from easyanimate_core.testing.transformer import tiny_transformer_config

        write_tiny_lora(lora, tiny_transformer_config(text_dim=32))


def write_inputs(input_dir: str, width: int = 96, height: int = 64, frames: int = 17) -> None:
    """Example inputs the workflows load: a start and an end image, a short video of a moving disc, and a
    camera pose file (Pan Left combined with Zoom In, 49 frames)."""
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image, ImageDraw

    os.makedirs(input_dir, exist_ok=True)

    def picture(t: float) -> np.ndarray:
        image = Image.new("RGB", (width, height), (40, 90 + int(100 * t), 200 - int(120 * t)))
        draw = ImageDraw.Draw(image)
        x = int((0.2 + 0.6 * t) * width)
        r = height // 4
        draw.ellipse((x - r, height // 2 - r, x + r, height // 2 + r), fill=(240, 200, 40))
        return np.asarray(image)

    Image.fromarray(picture(0.0)).save(os.path.join(input_dir, START_IMAGE))
    Image.fromarray(picture(1.0)).save(os.path.join(input_dir, END_IMAGE))
    with imageio.get_writer(
        os.path.join(input_dir, INPUT_VIDEO), format="FFMPEG", fps=8, codec="libx264", macro_block_size=2
    ) as writer:
        for i in range(frames):
            writer.append_data(picture(i / (frames - 1)))
    write_pose_file(os.path.join(input_dir, POSE_FILE))


def write_pose_file(path: str, frames: int = 49) -> None:
    """A CameraCtrl / RealEstate10K pose file of Pan Left + Zoom In, as EasyAnimate's asset/*.txt files look."""
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    from easyanimate_core import camera

    poses = camera.combine(camera.preset("Pan Left", 1.0, frames), camera.preset("Zoom In", 1.0, frames))
    with open(path, "w", encoding="utf-8") as f:
        f.write(camera.format_pose_file(poses, header="https://www.youtube.com/watch?v=example"))


def demo_prompt(workflow: dict, info: dict, overrides: dict | None = None) -> dict:
    """The API prompt of a UI workflow (as the browser sends it) with `overrides` applied by node type."""
    from . import ui_to_prompt

    prompt = ui_to_prompt(workflow, info)
    for entry in prompt.values():
        entry["inputs"].update((overrides if overrides is not None else DEMO_OVERRIDES).get(entry["class_type"], {}))
    return prompt


def output_files(result, output_dir: str) -> list[str]:
    """Full paths of the files the run's output nodes saved."""
    files = []
    for ui in result.outputs.values():
        for item in ui.get("images", []) + ui.get("gifs", []):
            if isinstance(item, dict) and item.get("type") == "output":
                files.append(os.path.join(output_dir, item.get("subfolder", ""), item["filename"]))
    return files


def run_all(executor=None, overrides: dict | None = None) -> dict[str, list[str]]:
    """Run every shipped workflow in the installed fake ComfyUI (pack loaded) -> {workflow file: saved files}."""
    from . import PromptExecutor, object_info

    executor = executor or PromptExecutor()
    output_dir = sys.modules["folder_paths"].get_output_directory()
    saved = {}
    for path in workflow_paths():
        workflow = load_workflow(path)
        prompt = demo_prompt(workflow, object_info(), overrides)
        result = executor.execute(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
        saved[os.path.basename(path)] = output_files(result, output_dir)
        log.info("%s -> %s", os.path.basename(path), ", ".join(saved[os.path.basename(path)]))
    return saved


def main(out_dir: str = "output") -> dict[str, list[str]]:
    """Set up the fake ComfyUI with tiny checkpoints under `out_dir/.models`, run every workflow, and
    leave the saved videos in `out_dir` -> {workflow file: saved files}."""
    from . import install_fake_comfy, load_pack

    out_dir = os.path.abspath(out_dir)
    models, inputs = os.path.join(out_dir, ".models"), os.path.join(out_dir, ".input")
    write_tiny_models(models, DEMO_CHECKPOINTS)
    write_inputs(inputs)
    with (
        tempfile.TemporaryDirectory() as custom_nodes,  # the pack's link lives outside out_dir: no link loops
        install_fake_comfy(models, inputs, out_dir, os.path.join(out_dir, ".temp")),
    ):
        load_pack(REPO_DIR, custom_nodes, folder_name="ComfyUI-EasyAnimate")
        return run_all()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for workflow, files in main(sys.argv[1] if len(sys.argv) > 1 else "output").items():
        print(f"{workflow}: {', '.join(files)}")
