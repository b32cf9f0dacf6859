"""The V5.1 conditioning-mode nodes (inpaint video, control video, Canny, trajectory, camera) in the fake ComfyUI
host, on tiny checkpoints: conditioning tensors against hand computations and the engine, clear errors."""

import math
import os

import kornia
import numpy as np
import pytest
import torch
from comfy_host import NodeExecutionError, PromptExecutor, execute_prompt, install_fake_comfy, load_pack, object_info
from comfy_host.run_workflows import (
    CONTROL_CHECKPOINTS,
    INPUT_VIDEO,
    POSE_FILE,
    START_IMAGE,
    TINY_CHECKPOINTS,
    write_inputs,
    write_tiny_models,
)
from PIL import Image

from easyanimate_core import camera, trajectory
from easyanimate_core.checkpoint import load_checkpoint
from easyanimate_core.conditioning import bucket_size, encode_mode
from easyanimate_core.pipeline import Request, fit_image, generate

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T2V, INP = "EasyAnimateV5.1-tiny-T2V", "EasyAnimateV5.1-tiny-InP"
CONTROL, CAMERA = "EasyAnimateV5.1-tiny-Control", "EasyAnimateV5.1-tiny-Control-Camera"
V5_CONTROL = "EasyAnimateV5-tiny-Control"
PROMPT, NEGATIVE = "a yellow disc drifts over a blue sea", "blurry, static"
SIZE = {"width": 64, "height": 48, "frames": 9}
NEW_NODES = {
    "EasyAnimateInpaintVideo", "EasyAnimateControlVideo", "EasyAnimateCanny", "EasyAnimateTrajectory",
    "EasyAnimateCameraPreset", "EasyAnimateCameraCombine", "EasyAnimateCameraChain", "EasyAnimateLoadCameraPose",
    "EasyAnimateCameraControl",
}  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy")
    models, inputs = str(root / "models"), str(root / "input")
    write_tiny_models(models, {**TINY_CHECKPOINTS, **CONTROL_CHECKPOINTS})
    from easyanimate_core.testing import write_tiny_checkpoint

    write_tiny_checkpoint(os.path.join(models, "EasyAnimate", V5_CONTROL), version="V5", variant="Control")
    write_inputs(inputs)
    with install_fake_comfy(models, inputs, str(root / "output")) as comfy:
        pack = load_pack(REPO_DIR, str(root / "custom_nodes"), folder_name="easyanimate-control")
        yield comfy, pack


@pytest.fixture(scope="module")
def run(env):
    return PromptExecutor().execute


@pytest.fixture(scope="module")
def engine(env):
    """Models loaded by the engine itself, per checkpoint, for the reference computations."""
    comfy, _ = env
    loaded = {}

    def get(name):
        if name not in loaded:
            path = os.path.join(comfy.models_dir, "EasyAnimate", name)
            loaded[name] = load_checkpoint(path, dtype=torch.float32)[0]
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def node(env):
    """Node instances by type, and loaded (model, vae) handles by checkpoint, for direct calls."""
    _, pack = env
    loaded = {}

    def get(name, ckpt=None):
        instance = pack.node_class_mappings[name]()
        if ckpt is None:
            return instance
        if ckpt not in loaded:
            loader = pack.node_class_mappings["EasyAnimateModelLoader"]()
            loaded[ckpt] = loader.load(ckpt, "fp32", "model_offload", 1)[:2]
        return instance, *loaded[ckpt]

    return get


def colour_frames(count=9, width=80, height=56):
    """EmptyImage's frames in control_prompt: [count, height, width, 3]."""
    return EMPTY_COLOUR.view(1, 1, 1, 3).expand(count, height, width, 3).clone()


# --- prompts ---------------------------------------------------------------------------------------


def base_prompt(ckpt, seed=7, steps=3, **sampler):
    return {
        "1": {"class_type": "EasyAnimateModelLoader", "inputs": {"checkpoint": ckpt, "precision": "fp32", "memory_mode": "model_offload", "resident_blocks": 1}},
        "2": {"class_type": "EasyAnimatePromptEncode", "inputs": {"text_encoder": ["1", 2], "prompt": PROMPT, "negative_prompt": NEGATIVE}},
        "3": {"class_type": "EasyAnimateVideoSampler", "inputs": {"model": ["1", 0], "embeds": ["2", 0], **SIZE, "steps": steps, "cfg": 6.0, "seed": seed, "scheduler": "Flow", "shift": 0.0, **sampler}},
        "4": {"class_type": "EasyAnimateVAEDecode", "inputs": {"vae": ["1", 1], "samples": ["3", 0], "tile": False, "tile_size": 512}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
        "6": {"class_type": "LoadImage", "inputs": {"image": START_IMAGE}},
        "7": {"class_type": "EmptyImage", "inputs": {"width": 80, "height": 56, "batch_size": 9, "color": 0x3366CC}},
    }  # fmt: skip


def canny_node(images=("7", 0), low=0.1, high=0.2, **extra):
    return {"class_type": "EasyAnimateCanny", "inputs": {"images": list(images), "low_threshold": low, "high_threshold": high, **extra}}  # fmt: skip


def control_prompt(ckpt=CONTROL, ref=True, seed=7, resample=False, control=("7", 0), **size):
    prompt = base_prompt(ckpt, seed)
    prompt["8"] = {
        "class_type": "EasyAnimateControlVideo",
        "inputs": {"model": ["1", 0], "vae": ["1", 1], "control_video": list(control), **{**SIZE, **size}, "resample": resample},
    }  # fmt: skip
    if ref:
        prompt["8"]["inputs"]["ref_image"] = ["6", 0]
    prompt["3"]["inputs"]["conditioning"] = ["8", 0]
    return prompt


def camera_prompt(ckpt=CAMERA, ref=True, seed=7, frames=9, resample=False, motions=("Pan Left", "Zoom In")):
    prompt = base_prompt(ckpt, seed)
    prompt["9"] = {
        "class_type": "EasyAnimateCameraPreset",
        "inputs": {"motion": motions[0], "speed": 1.0, "frames": frames},
    }
    prompt["10"] = {
        "class_type": "EasyAnimateCameraPreset",
        "inputs": {"motion": motions[1], "speed": 1.0, "frames": frames},
    }
    prompt["11"] = {"class_type": "EasyAnimateCameraCombine", "inputs": {"camera_a": ["9", 0], "camera_b": ["10", 0]}}
    prompt["8"] = {
        "class_type": "EasyAnimateCameraControl",
        "inputs": {"model": ["1", 0], "vae": ["1", 1], "camera": ["11", 0], **SIZE, "resample": resample},
    }  # fmt: skip
    if ref:
        prompt["8"]["inputs"]["ref_image"] = ["6", 0]
    prompt["3"]["inputs"]["conditioning"] = ["8", 0]
    return prompt


def inpaint_prompt(ckpt=INP, seed=7, denoise=0.7, mask=True, resample=False, frames_in=9):
    prompt = base_prompt(ckpt, seed, denoise=denoise, latent=["8", 1])
    prompt["7"]["inputs"]["batch_size"] = frames_in
    prompt["8"] = {
        "class_type": "EasyAnimateInpaintVideo",
        "inputs": {"model": ["1", 0], "vae": ["1", 1], "video": ["7", 0], **SIZE, "resample": resample,
                   "noise_aug_strength": 0.0563, "seed": seed},
    }  # fmt: skip
    if mask:
        prompt["12"] = {"class_type": "SolidMaskHalf", "inputs": {}}
        prompt["8"]["inputs"]["mask"] = ["12", 0]
    prompt["3"]["inputs"]["conditioning"] = ["8", 0]
    return prompt


def cond_of(result, node="8"):
    return result.results[node][0][0].conditioning


def latents_of(result, node="3"):
    return result.results[node][0][0]["samples"]


def error_of(run, prompt) -> str:
    with pytest.raises(NodeExecutionError) as info:
        run(prompt)
    assert isinstance(info.value.__cause__, ValueError | FileNotFoundError), info.value.__cause__
    return info.value.details["exception_message"]


def image_of(comfy, name) -> torch.Tensor:
    """An input image as the nodes see its first frame: [3, H, W] 0..1."""
    with Image.open(os.path.join(comfy.input_dir, name)) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).float().div(255).movedim(-1, 0)


EMPTY_COLOUR = torch.tensor([0x33, 0x66, 0xCC]) / 255.0  # EmptyImage's colour in control_prompt


# --- /object_info ----------------------------------------------------------------------------------


def test_new_nodes_are_documented(env):
    _, pack = env
    info = object_info()
    assert NEW_NODES <= set(pack.node_class_mappings)
    for name in NEW_NODES:
        entry = info[name]
        assert entry["description"] and entry["category"].startswith("EasyAnimate/") and entry["output_node"] is False
        assert len(entry["output_tooltips"]) == len(entry["output"]) and all(entry["output_tooltips"])
        for category in ("required", "optional"):
            for input_name, spec in entry["input"].get(category, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    traj = info["EasyAnimateTrajectory"]["input"]
    assert list(traj["required"]) == ["tracks_json", "ref_width", "ref_height", "frames", "width", "height", "resample"]
    assert set(traj["optional"]) == {"reference_image"}
    default = traj["required"]["tracks_json"][1]
    assert default["multiline"] and default["default"] != "[]"
    tracks = trajectory.parse_tracks(default["default"], traj["required"]["ref_width"][1]["default"],
                                     traj["required"]["ref_height"][1]["default"])  # fmt: skip
    assert len(tracks) == 1 and len(tracks[0]) == traj["required"]["frames"][1]["default"]
    assert info["EasyAnimateCameraPreset"]["input"]["required"]["motion"][0] == list(camera.PRESETS)
    assert info["EasyAnimateLoadCameraPose"]["input"]["required"]["pose_file"][0] == [POSE_FILE]
    assert info["EasyAnimateTrajectory"]["output"] == ("IMAGE", "IMAGE")
    assert (
        info["EasyAnimateCameraControl"]["output"] == info["EasyAnimateControlVideo"]["output"] == ("EASYANIMATE_COND",)
    )


# --- Canny -----------------------------------------------------------------------------------------


def test_canny_matches_kornia_in_chunks_with_progress(env, run, every_progress_event):
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(20, 40, 56, 3, generator=generator)  # more frames than one chunk (16)
    _, pack = env
    node = pack.node_class_mappings["EasyAnimateCanny"]()
    (edges,) = node.detect(frames, 0.15, 0.3, blur_sigma=1.5, kernel_size=7)
    _, expected = kornia.filters.canny(frames.movedim(-1, 1), 0.15, 0.3, (7, 7), (1.5, 1.5))
    assert edges.shape == (20, 40, 56, 3) and torch.equal(edges, expected.movedim(1, -1).expand(-1, -1, -1, 3))
    assert 0 < edges.mean() < 1 and set(edges.unique().tolist()) <= {0.0, 1.0}
    prompt = {
        "7": base_prompt(T2V)["7"],
        "13": canny_node(),
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
    }
    result = run(prompt)
    assert result.results["13"][0][0].shape == (9, 56, 80, 3)
    assert [(p["value"], p["max"]) for p in result.events("progress") if p["node"] == "13"] == [(9, 9)]


def test_canny_stops_between_chunks_on_interrupt(env):
    comfy, pack = env
    node = pack.node_class_mappings["EasyAnimateCanny"]()
    comfy.interrupt()
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        node.detect(torch.rand(40, 16, 16, 3), 0.1, 0.2)
    assert comfy.model_management.processing_interrupted() is False


def test_canny_thresholds_must_be_ordered(env, run):
    prompt = {
        "7": base_prompt(T2V)["7"],
        "13": canny_node(low=0.5, high=0.2),
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
    }
    assert "low_threshold" in error_of(run, prompt)


# --- control video ---------------------------------------------------------------------------------


def test_control_video_conditioning_and_ref_latents_on_the_first_frame(env, node, engine):
    comfy, _ = env
    control_video, model, vae = node("EasyAnimateControlVideo", CONTROL)
    start = image_of(comfy, START_IMAGE).movedim(0, -1)[None]  # as LoadImage gives it: [1, H, W, 3]
    (cond,) = control_video.encode(model, vae, colour_frames(), **SIZE, resample=False, ref_image=start)
    control = cond.conditioning.control
    assert control.shape == (1, 32, 3, 6, 8) and (cond.width, cond.height, cond.frames) == (64, 48, 9)
    reference = engine(CONTROL).vae  # control latents (16) + ref-image latents (16), from the engine's own VAE
    video = EMPTY_COLOUR.view(1, 3, 1, 1, 1).expand(1, 3, 9, 48, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(control[:, :16], encode_mode(reference, video), atol=1e-5)
        ref = encode_mode(reference, fit_image(image_of(comfy, START_IMAGE), 64, 48)[None, :, None])
    assert torch.allclose(control[:, 16:, :1], ref, atol=1e-5)
    assert torch.count_nonzero(control[:, 16:, 1:]) == 0
    without = control_video.encode(model, vae, colour_frames(), **SIZE, resample=False)[0].conditioning.control
    assert torch.equal(without[:, :16], control[:, :16]) and torch.count_nonzero(without[:, 16:]) == 0


def test_control_video_run_matches_the_engine_and_repeats(env, run, engine):
    comfy, _ = env
    prompt = control_prompt(seed=5, control=("13", 0))
    prompt["16"] = {"class_type": "LoadVideo", "inputs": {"file": INPUT_VIDEO}}
    prompt["17"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["16", 0]}}
    prompt["18"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["17", 0], "batch_index": 0, "length": 9}}
    prompt["13"] = canny_node(images=("18", 0))
    result = run(prompt)
    edges = result.results["13"][0][0]  # [9, 64, 96, 3]: the moving disc's outline
    assert edges.shape == (9, 64, 96, 3) and 0 < edges.mean() < 0.5
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=5, ref_image=image_of(comfy, START_IMAGE),
                      control_video=edges.movedim(-1, 0), **SIZE)  # fmt: skip
    assert torch.allclose(latents_of(result), generate(engine(CONTROL), request, output="latents"), atol=1e-4)
    again = execute_prompt(prompt)  # a fresh executor: nothing cached
    assert torch.equal(latents_of(again), latents_of(result))
    assert result.results["4"][0][0].shape == (9, 48, 64, 3)


def test_control_video_frame_counts(node):
    control_video, model, vae = node("EasyAnimateControlVideo", CONTROL)
    with pytest.raises(ValueError) as info:
        control_video.encode(model, vae, colour_frames(5), **SIZE, resample=False)
    assert "5 frames" in str(info.value) and "9 are generated" in str(info.value) and "resample" in str(info.value)
    (cond,) = control_video.encode(model, vae, colour_frames(5), **SIZE, resample=True)
    assert cond.conditioning.control.shape == (1, 32, 3, 6, 8)


def test_control_errors_name_the_checkpoint_to_use(env, run, node):
    for ckpt in (T2V, INP):
        message = error_of(run, control_prompt(ckpt))
        assert "Control checkpoint" in message and ckpt.rsplit("-", 1)[1] in message
    assert "Camera Control" in error_of(run, control_prompt(CAMERA))
    message = error_of(run, control_prompt(V5_CONTROL))
    assert "reference image" in message and "disconnect ref_image" in message
    control_video, model, vae = node("EasyAnimateControlVideo", V5_CONTROL)
    (cond,) = control_video.encode(model, vae, colour_frames(), **SIZE, resample=False)
    assert cond.conditioning.control.shape == (1, 16, 3, 6, 8)  # V5: control latents only


# --- trajectory ------------------------------------------------------------------------------------

TRACK = '[[{"x": 20, "y": 30}, {"x": 60, "y": 30}, {"x": 70, "y": 40}]]'


def trajectory_node(tracks=TRACK, frames=9, resample=True, reference=True):
    node = {"class_type": "EasyAnimateTrajectory",
            "inputs": {"tracks_json": tracks, "ref_width": 80, "ref_height": 56, "frames": frames, "width": 64,
                       "height": 48, "resample": resample}}  # fmt: skip
    if reference:
        node["inputs"]["reference_image"] = ["6", 0]
    return node


def test_trajectory_control_video_preview_and_editor_image(env, run):
    comfy, _ = env
    prompt = control_prompt(control=("15", 0))
    prompt["15"] = trajectory_node()
    result = run(prompt)
    video, preview = result.results["15"][0][0], result.results["15"][1][0]
    # The editor draws the 96x64 reference image stretched over the 80x56 canvas: the tracks are fractions of the
    # image and are cropped to 4:3 as the image is (by 3:2, not by the canvas's 10:7), to stay on its content.
    on_canvas = trajectory.parse_tracks(TRACK, 80, 56)
    tracks = trajectory.fit_tracks(on_canvas, 96, 64, 64, 48)
    assert torch.equal(video, trajectory.tracks_to_video(tracks, 64, 48, 9, resample=True))
    assert tracks != trajectory.fit_tracks(on_canvas, 80, 56, 64, 48)
    assert video.shape == (9, 48, 64, 3) and preview.shape == (1, 48, 64, 3)
    (shown,) = result.outputs["15"]["bg_image"]  # a temp file the editor fetches through /view
    assert shown["type"] == "temp" and shown["subfolder"] == "" and shown["filename"].endswith(".png")
    with Image.open(os.path.join(comfy.modules["folder_paths"].get_temp_directory(), shown["filename"])) as png:
        assert png.format == "PNG" and png.size == (96, 64)  # the reference image as loaded
        sent = torch.from_numpy(np.asarray(png.convert("RGB")).copy()).float().div(255).movedim(-1, 0)
    assert torch.equal(sent, image_of(comfy, START_IMAGE))
    assert cond_of(result).control.shape == (1, 32, 3, 6, 8)
    no_ref = {
        "15": trajectory_node(reference=False),
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["15", 1]}},
    }
    assert "bg_image" not in run(no_ref).outputs.get("15", {})


def test_trajectory_errors(env, run):
    prompt = {"6": base_prompt(T2V)["6"], "15": trajectory_node('[[{"x": 90, "y": 30}]]'),
              "5": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}}}  # fmt: skip
    message = error_of(run, prompt)
    assert "outside" in message and "80x56" in message
    prompt["15"] = trajectory_node(resample=False)
    message = error_of(run, prompt)
    assert "3 points" in message and "9 frames" in message and "resample" in message


# --- camera ----------------------------------------------------------------------------------------


def spatial_8x(x: torch.Tensor) -> torch.Tensor:
    """Trilinear (align_corners=False) downsampling by exactly 8: the mean of the 2x2 pixels around each centre."""
    return (x[..., 3::8, 3::8] + x[..., 4::8, 3::8] + x[..., 3::8, 4::8] + x[..., 4::8, 4::8]) / 4


def test_camera_control_embedding_by_hand(env, run, engine):
    comfy, _ = env
    result = run(camera_prompt())
    control = cond_of(result).control
    assert control.shape == (1, 6 + 16, 3, 6, 8)
    poses = camera.combine(camera.preset("Pan Left", 1.0, 9), camera.preset("Zoom In", 1.0, 9))
    p = camera.plucker_embedding(poses, 64, 48)  # [6, 9, 48, 64]
    # the first frame alone; frames 1..8 resized to 2 latent frames: positions 1.5 and 5.5 of the 8
    expected = torch.stack(
        [spatial_8x(p[:, 0]), (spatial_8x(p[:, 2]) + spatial_8x(p[:, 3])) / 2, (spatial_8x(p[:, 6]) + spatial_8x(p[:, 7])) / 2],
        dim=1,
    ) * 6  # fmt: skip
    assert torch.allclose(control[0, :6], expected, atol=1e-5)
    vae = engine(CAMERA).vae
    with torch.no_grad():
        ref = encode_mode(vae, fit_image(image_of(comfy, START_IMAGE), 64, 48)[None, :, None])
    assert torch.allclose(control[:, 6:, :1], ref, atol=1e-5) and torch.count_nonzero(control[:, 6:, 1:]) == 0
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=7, camera=p,
                      ref_image=image_of(comfy, START_IMAGE), **SIZE)  # fmt: skip
    assert torch.allclose(latents_of(result), generate(engine(CAMERA), request, output="latents"), atol=1e-4)
    assert torch.equal(latents_of(execute_prompt(camera_prompt())), latents_of(result))  # same seed, same video


def test_camera_nodes_build_the_paths(env):
    _, pack = env
    nodes = pack.node_class_mappings
    (a,) = nodes["EasyAnimateCameraPreset"]().make("Pan Up", 0.5, 5)
    (b,) = nodes["EasyAnimateCameraPreset"]().make("CW", 2.0, 5)
    (combined,) = nodes["EasyAnimateCameraCombine"]().combine(a, b)
    (chained,) = nodes["EasyAnimateCameraChain"]().chain(a, b, a)
    assert isinstance(a.poses, tuple) and a.frames == 5 and combined.frames == 5 and chained.frames == 13
    expected = camera.combine(camera.preset("Pan Up", 0.5, 5), camera.preset("CW", 2.0, 5))
    assert all(np.array_equal(x.w2c, y.w2c) for x, y in zip(combined.poses, expected))
    expected = camera.chain(
        camera.preset("Pan Up", 0.5, 5), camera.preset("CW", 2.0, 5), camera.preset("Pan Up", 0.5, 5)
    )
    assert all(np.array_equal(x.w2c, y.w2c) for x, y in zip(chained.poses, expected))
    assert all(p.intrinsics == camera.DEFAULT_INTRINSICS for p in a.poses)  # the official workflow's by default
    (wide,) = nodes["EasyAnimateCameraPreset"]().make("Pan Up", 0.5, 5, fx=0.4, fy=0.711, cx=0.45, cy=0.5)
    assert all(p.intrinsics == (0.4, 0.711, 0.45, 0.5) for p in wide.poses)  # as the official CameraTrajectory node
    rays, default_rays = (camera.plucker_embedding(list(p.poses), 64, 48) for p in (wide, a))
    assert torch.allclose(
        rays, camera.plucker_embedding(camera.preset("Pan Up", 0.5, 5, (0.4, 0.711, 0.45, 0.5)), 64, 48)
    )
    assert not torch.allclose(rays, default_rays)  # the rays follow the focal length


def test_load_camera_pose_file(env):
    comfy, pack = env
    node = pack.node_class_mappings["EasyAnimateLoadCameraPose"]()
    path = os.path.join(comfy.input_dir, POSE_FILE)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    (loaded,) = node.load(POSE_FILE, 49, False)
    expected = camera.combine(camera.preset("Pan Left", 1.0, 49), camera.preset("Zoom In", 1.0, 49))
    assert loaded.frames == 49 and all(np.allclose(x.w2c, y.w2c, atol=1e-8) for x, y in zip(loaded.poses, expected))
    assert node.load(POSE_FILE, 9, True)[0].frames == 9
    first = node.load(POSE_FILE, 9, False)[0].poses  # more poses than frames: the first ones, as EasyAnimate does
    assert all(np.array_equal(x.w2c, y.w2c) for x, y in zip(first, loaded.poses[:9])) and len(first) == 9
    strided = node.load(POSE_FILE, 9, False, stride=3)[0].poses  # EasyAnimate's [::24 // fps][:frames]
    assert all(np.array_equal(x.w2c, y.w2c) for x, y in zip(strided, loaded.poses[::3][:9])) and len(strided) == 9
    with pytest.raises(ValueError, match=r"49 poses \(9 with stride 6\) but 13 frames .* or lower the stride"):
        node.load(POSE_FILE, 13, False, stride=6)
    assert node.load(POSE_FILE, 13, True, stride=6)[0].frames == 13  # spread
    for source in (path, POSE_FILE, text):  # an absolute path, a path in the input folder, the lines themselves
        assert node.load("ignored.txt", 49, False, pose_path=source)[0].frames == 49
    with pytest.raises(FileNotFoundError, match="input folder"):
        node.load(POSE_FILE, 49, False, pose_path="missing.txt")
    # one pasted line (no newline left after strip) is a pose too, e.g. a static camera spread with resample
    line = next(row for row in text.splitlines() if row.split() and camera._is_number(row.split()[0]))
    (single,) = node.load("ignored.txt", 9, True, pose_path=f"  {line}\n")
    assert single.frames == 9 and all(np.array_equal(p.w2c, loaded.poses[0].w2c) for p in single.poses)
    with pytest.raises(FileNotFoundError, match="input folder"):  # a file name with spaces is still a path
        node.load(POSE_FILE, 49, False, pose_path="0 my poses.txt")
    cls = type(node)
    same = cls.IS_CHANGED(pose_file=POSE_FILE, frames=49, resample=False)  # ComfyUI passes keywords
    assert same == cls.IS_CHANGED(pose_file="x", frames=49, resample=False, pose_path=text)
    for linked in ({"pose_file": None}, {"pose_file": POSE_FILE, "pose_path": None}):  # wired to other nodes
        assert cls.IS_CHANGED(frames=None, resample=None, **linked) == "wired"  # a constant: cached while upstream is
    assert cls.IS_CHANGED(pose_file=None, pose_path=text) == same  # pose_path wins over a wired pose_file
    assert math.isnan(cls.IS_CHANGED(pose_file=POSE_FILE, pose_path="missing.txt"))  # unreadable: always re-run


def test_camera_errors(env, run):
    for ckpt in (T2V, INP, CONTROL):
        message = error_of(run, camera_prompt(ckpt))
        assert "Control-Camera checkpoint" in message and ckpt.rsplit("tiny-", 1)[1] in message
    message = error_of(run, camera_prompt(frames=13))
    assert "13 poses" in message and "9 frames" in message and "resample" in message
    assert cond_of(run(camera_prompt(frames=13, resample=True))).control.shape == (1, 22, 3, 6, 8)


# --- inpaint video ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_mask_node(env):
    """A core-node stand-in: SolidMaskHalf gives a 64x48 MASK regenerating the right half (x >= 32)."""
    comfy, _ = env

    class SolidMaskHalf:
        CATEGORY, FUNCTION, RETURN_TYPES = "mask", "make", ("MASK",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def make(self):
            mask = torch.zeros(1, 48, 64)
            mask[..., 32:] = 1
            return (mask,)

    comfy.modules["nodes"].NODE_CLASS_MAPPINGS["SolidMaskHalf"] = SolidMaskHalf
    return SolidMaskHalf


def test_inpaint_video_on_inp_matches_the_engine(env, run, engine, half_mask_node):
    result = run(inpaint_prompt(seed=3))
    inpaint = cond_of(result).inpaint
    assert inpaint.shape == (1, 17, 3, 6, 8)
    video = EMPTY_COLOUR.view(3, 1, 1, 1).expand(3, 9, 48, 64)
    mask = torch.zeros(9, 48, 64)
    mask[..., 32:] = 1
    request = Request(prompt=PROMPT, negative_prompt=NEGATIVE, steps=3, cfg=6.0, seed=3, denoise=0.7, video=video,
                      mask=mask, **SIZE)  # fmt: skip
    # EmptyImage is 80x56 and the mask 64x48: the video is cover-cropped, a flat colour either way
    assert torch.allclose(latents_of(result), generate(engine(INP), request, output="latents"), atol=1e-4)
    assert not torch.allclose(latents_of(run(inpaint_prompt(seed=3, mask=False))), latents_of(result))


def test_inpaint_video_on_t2v_keeps_the_unmasked_latents(env, run, half_mask_node):
    for denoise in (1.0, 0.6):
        result = run(inpaint_prompt(T2V, denoise=denoise))
        cond = cond_of(result)
        init, latents = result.results["8"][1][0]["samples"], latents_of(result)
        assert cond.keep_mask.shape == (1, 1, 3, 6, 8) and torch.equal(cond.init_latents, init)
        assert torch.equal(cond.keep_mask[..., :4], torch.zeros(1, 1, 3, 6, 4)) and (cond.keep_mask[..., 4:] == 1).all()
        assert torch.equal(latents[..., :4], init[..., :4])  # the kept half is the input video's latents
        assert not torch.allclose(latents[..., 4:], init[..., 4:])


def test_inpaint_video_errors(env, run, half_mask_node):
    message = error_of(run, inpaint_prompt(frames_in=13))
    assert "input video has 13 frames" in message and "9 are generated" in message
    assert latents_of(run(inpaint_prompt(frames_in=13, resample=True))).shape == (1, 16, 3, 6, 8)
    assert "Control Video" in error_of(run, inpaint_prompt(CONTROL))


@pytest.mark.parametrize(
    ("image", "base", "expected"),
    [
        ((1280, 720), 512, (672, 384)),  # landscape 16:9 -> the official default size
        ((1280, 720), 768, (1008, 576)),
        ((1280, 720), 960, (1248, 720)),  # the official nodes' 960: 672 * 960 / 512 = 1260 -> 1248
        ((720, 1280), 512, (384, 672)),  # portrait
        ((512, 512), 1024, (1024, 1024)),
        ((1000, 3000), 512, (288, 864)),  # ratio 3.0
    ],
)
def test_bucket_size_follows_the_official_buckets(image, base, expected):
    assert bucket_size(*image, base) == expected


def test_bucket_size_node_and_errors(env):
    _, pack = env
    node = pack.node_class_mappings["EasyAnimateBucketSize"]()
    assert node.size(torch.zeros(1, 720, 1280, 3), 768) == (1008, 576)
    with pytest.raises(ValueError, match="base resolution"):
        bucket_size(100, 100, 640)


def test_canny_kernel_larger_than_the_frames_is_refused(env):
    _, pack = env
    node = pack.node_class_mappings["EasyAnimateCanny"]()
    # the blur pads by kernel_size // 2 with reflection, which needs that much less than a side: at most 2*side - 1
    with pytest.raises(ValueError, match=r"^kernel_size 49 is too large for the 24x24 frames: use at most 47$"):
        node.detect(torch.rand(1, 24, 24, 3), 0.1, 0.2, kernel_size=49)
    with pytest.raises(ValueError, match=r"^kernel_size 17 is too large for the 10x8 frames: use at most 15$"):
        node.detect(torch.rand(1, 8, 10, 3), 0.1, 0.2, kernel_size=17)
    assert node.detect(torch.rand(1, 24, 24, 3), 0.1, 0.2, kernel_size=47)[0].shape == (1, 24, 24, 3)
    with pytest.raises(ValueError, match=r"the 1x1 frames are too small for Canny edges"):
        node.detect(torch.rand(1, 1, 1, 3), 0.1, 0.2, kernel_size=3)


def test_binary_file_as_camera_pose_file_is_refused(env, tmp_path):
    _, pack = env
    node = pack.node_class_mappings["EasyAnimateLoadCameraPose"]()
    for name, data in (("pose.bin", bytes(range(256))), ("nul.txt", b"0 0.5\x00 0.9")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"^{path} is not a text pose file"):
            node.load("ignored.txt", 9, False, pose_path=str(path))


def test_pose_path_naming_a_non_pose_file_does_not_leak_its_text(env, tmp_path):
    # pose_path can name any readable file and the error reaches the browser: line numbers only, never the text.
    _, pack = env
    node = pack.node_class_mappings["EasyAnimateLoadCameraPose"]()
    path = tmp_path / "secret.txt"
    path.write_text("root:x:0:0:root:/root:/bin/bash\nSECRET_API_KEY=sk-live-1234567890abcdef\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no line starts with a number \(skipped lines 1, 2\);") as error:
        node.load("ignored.txt", 9, False, pose_path=str(path))
    assert "root" not in str(error.value) and "sk-live" not in str(error.value)


# --- IMAGE channels, MASK shapes, Cancel and progress of the conditioning encodes --------------------


def gray_and_rgba(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A gray IMAGE [..., 1] -> (it, its RGB [..., 3], an RGBA [..., 4] of that RGB with a random alpha)."""
    rgb = image.expand(*image.shape[:-1], 3)
    return image, rgb, torch.cat([rgb, torch.rand(*image.shape[:-1], 1)], dim=-1)


def test_gray_and_rgba_images_work_like_rgb_on_every_input(env, node):
    """1-channel IMAGEs are repeated to RGB and RGBA ones lose their alpha, in one place for every node."""
    generator = torch.Generator().manual_seed(4)
    video, video_rgb, video_rgba = gray_and_rgba(torch.rand(9, 56, 80, 1, generator=generator))
    ref, ref_rgb, ref_rgba = gray_and_rgba(torch.rand(1, 56, 80, 1, generator=generator))
    control_video, model, vae = node("EasyAnimateControlVideo", CONTROL)

    def control(v, r):
        return control_video.encode(model, vae, v, **SIZE, resample=False, ref_image=r)[0].conditioning.control

    expected = control(video_rgb, ref_rgb)
    assert torch.count_nonzero(expected[:, 16:, :1]) > 0  # the ref image's latents are there
    assert torch.equal(control(video, ref), expected) and torch.equal(control(video_rgba, ref_rgba), expected)
    inpaint, model, vae = node("EasyAnimateInpaintVideo", T2V)
    latents = [inpaint.encode(model, vae, v, **SIZE, resample=False, noise_aug_strength=0.0, seed=1)[1]["samples"]
               for v in (video, video_rgb, video_rgba)]  # fmt: skip
    assert torch.equal(latents[0], latents[1]) and torch.equal(latents[2], latents[1])
    camera_control, model, vae = node("EasyAnimateCameraControl", CAMERA)
    path = node("EasyAnimateCameraPreset").make("Pan Left", 1.0, 9)[0]
    controls = [camera_control.encode(model, vae, path, **SIZE, resample=False, ref_image=r)[0].conditioning.control
                for r in (ref, ref_rgb, ref_rgba)]  # fmt: skip
    assert torch.equal(controls[0], controls[1]) and torch.equal(controls[2], controls[1])
    trajectory_node = node("EasyAnimateTrajectory")
    previews = [trajectory_node.draw(TRACK, 80, 56, 9, 64, 48, True, reference_image=r)["result"][1]
                for r in (ref, ref_rgb, ref_rgba)]  # fmt: skip
    assert torch.equal(previews[0], previews[1]) and torch.equal(previews[2], previews[1])


def test_vae_encode_takes_gray_and_rgba_images_like_rgb(node):
    generator = torch.Generator().manual_seed(5)
    video, video_rgb, video_rgba = gray_and_rgba(torch.rand(9, 48, 64, 1, generator=generator))
    encode, _, vae = node("EasyAnimateVAEEncode", T2V)
    latents = [encode.encode(vae, v, False, 512)[0]["samples"] for v in (video, video_rgb, video_rgba)]
    assert latents[1].shape == (1, 16, 3, 6, 8) and torch.count_nonzero(latents[1]) > 0
    assert torch.equal(latents[0], latents[1]) and torch.equal(latents[2], latents[1])
    with pytest.raises(
        ValueError, match=r"^images: IMAGE must have 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\) channels, got 2"
    ):
        encode.encode(vae, torch.rand(9, 48, 64, 2), False, 512)
    with pytest.raises(ValueError, match=r"^images must be an IMAGE \[frames, H, W, C\], got shape \(48, 64, 3\)$"):
        encode.encode(vae, torch.rand(48, 64, 3), False, 512)


def test_other_channel_counts_and_empty_images_name_the_input(node):
    control_video, model, vae = node("EasyAnimateControlVideo", CONTROL)
    two = "IMAGE must have 1 \\(gray\\), 3 \\(RGB\\) or 4 \\(RGBA\\) channels, got 2"
    with pytest.raises(ValueError, match=f"^control video: {two}"):
        control_video.encode(model, vae, torch.rand(9, 56, 80, 2), **SIZE, resample=False)
    with pytest.raises(ValueError, match=f"^ref_image: {two}"):
        control_video.encode(model, vae, colour_frames(), **SIZE, resample=False, ref_image=torch.rand(1, 56, 80, 2))
    with pytest.raises(ValueError, match="^ref_image is an empty batch"):
        control_video.encode(model, vae, colour_frames(), **SIZE, resample=False, ref_image=torch.rand(0, 56, 80, 3))
    with pytest.raises(ValueError, match="^control video is an empty batch"):
        control_video.encode(model, vae, torch.rand(0, 56, 80, 3), **SIZE, resample=False)
    camera_control, model, vae = node("EasyAnimateCameraControl", CAMERA)
    path = node("EasyAnimateCameraPreset").make("Pan Left", 1.0, 9)[0]
    with pytest.raises(ValueError, match="^ref_image is an empty batch"):
        camera_control.encode(model, vae, path, **SIZE, resample=False, ref_image=torch.rand(0, 56, 80, 3))


def test_inpaint_masks_of_every_mask_layout(node):
    """[H, W], [N, H, W] and [N, 1, H, W] (as some mask nodes give) are the same mask; other shapes are errors."""
    inpaint, model, vae = node("EasyAnimateInpaintVideo", T2V)
    mask = torch.zeros(9, 56, 80)
    mask[..., 40:] = 1

    def keep(m):
        (cond, _) = inpaint.encode(model, vae, colour_frames(), **SIZE, resample=False, noise_aug_strength=0.0,
                                   seed=1, mask=m)  # fmt: skip
        return cond.conditioning.keep_mask

    expected = keep(mask)
    assert expected.shape == (1, 1, 3, 6, 8) and (expected[..., :3] == 0).all() and (expected[..., 5:] == 1).all()
    assert torch.equal(keep(mask[:, None]), expected) and torch.equal(keep(mask[0]), expected)
    assert torch.equal(keep(mask[:1, None]), expected)
    with pytest.raises(ValueError, match=r"^mask must be \[frames, H, W\] \(a MASK\), got \(9, 2, 56, 80\)"):
        keep(torch.zeros(9, 2, 56, 80))


def test_inpaint_mask_of_another_aspect_ratio_is_refused(node):
    """The video and the mask are each scaled to cover and centre-cropped: a mask of the video's aspect ratio (any
    resolution) or of the generation size's lines up; another aspect ratio would land off the video."""
    inpaint, model, vae = node("EasyAnimateInpaintVideo", T2V)

    def keep(m):
        (cond, _) = inpaint.encode(model, vae, colour_frames(), **SIZE, resample=False, noise_aug_strength=0.0,
                                   seed=1, mask=m)  # fmt: skip
        return cond.conditioning.keep_mask

    message = (r"^the mask is 80x80 but the video is 80x56: give a mask of the video's aspect ratio \(resize both "
               r"the same way\)")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        keep(torch.ones(1, 80, 80))
    half = torch.zeros(1, 112, 160)  # twice the video's size: the same aspect ratio
    half[..., 80:] = 1
    small = torch.zeros(1, 56, 80)
    small[..., 40:] = 1
    assert torch.equal(keep(half), keep(small))
    assert keep(torch.ones(1, 48, 64)).shape == (1, 1, 3, 6, 8)  # the generation size: already in the output frame


@pytest.mark.parametrize("which", ["inpaint", "control", "camera"])
def test_conditioning_encodes_report_progress_and_stop_on_cancel(
    env, node, half_mask_node, which, every_progress_event
):
    """The node's VAE encodes fill one progress bar, and Cancel (ComfyUI's interrupt) pressed before or while the
    node encodes stops it with ComfyUI's own exception."""
    comfy, _ = env
    if which == "inpaint":
        prompt, (encoder, model, vae) = inpaint_prompt(), node("EasyAnimateInpaintVideo", INP)
        mask = (torch.arange(64) >= 32).float().expand(1, 48, 64)  # two encodes: the video, the masked video

        def call():
            encoder.encode(model, vae, colour_frames(), **SIZE, resample=False, noise_aug_strength=0.0563, seed=1,
                           mask=mask)  # fmt: skip
    elif which == "control":
        prompt, (encoder, model, vae) = control_prompt(), node("EasyAnimateControlVideo", CONTROL)

        def call():
            encoder.encode(model, vae, colour_frames(), **SIZE, resample=False)
    else:
        prompt, (encoder, model, vae) = camera_prompt(), node("EasyAnimateCameraControl", CAMERA)
        path = node("EasyAnimateCameraPreset").make("Pan Left", 1.0, 9)[0]

        def call():
            encoder.encode(model, vae, path, **SIZE, resample=False, ref_image=colour_frames(1))

    steps = [(p["value"], p["max"]) for p in PromptExecutor().execute(prompt).events("progress") if p["node"] == "8"]
    assert steps and steps[-1][0] == steps[-1][1]  # the bar reaches its total
    assert all(a / m < b / n for (a, m), (b, n) in zip(steps, steps[1:], strict=False))  # and never goes back
    comfy.interrupt()  # before the encode
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        call()
    assert comfy.model_management.processing_interrupted() is False
    if which == "camera":
        return  # the camera path's one encode (the ref image) is one step: Cancel during it stops the next node
    utils = comfy.modules["comfy.utils"]
    original = utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, prompt_id=None, node_id=None):
        original(value, total, preview, prompt_id=prompt_id, node_id=node_id)
        if comfy.server.last_node_id == "8" and value == 1:
            comfy.interrupt()  # the user presses Cancel during the encode

    utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            PromptExecutor().execute(prompt)
    finally:
        utils.set_progress_bar_global_hook(original)
    assert comfy.messages[-1][0] == "execution_interrupted" and comfy.messages[-1][1]["node_id"] == "8"


def test_trajectory_checks_the_video_size_itself(env, run):
    node = trajectory_node(frames=10, reference=False)
    prompt = {"15": node, "5": {"class_type": "PreviewImage", "inputs": {"images": ["15", 1]}}}
    assert "nearest: 9" in str(error_of(run, prompt))
    node["inputs"].update(frames=9, width=65)
    assert "nearest: 64" in str(error_of(run, prompt))


def test_api_refuses_inputs_a_variant_would_ignore(env, engine):
    """Each was silently dropped by generate(): the video came out as if the input were not there."""
    request = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=2, cfg=1.0, seed=1, **SIZE)
    video, mask = torch.rand(3, 9, 48, 64), torch.ones(48, 64)
    cases = [
        (CONTROL, dict(video=video, mask=mask), "an inpaint mask needs an InP or T2V checkpoint; this one is Control"),
        (CAMERA, dict(camera=camera.plucker_embedding(camera.preset("Pan Left", 1.0, 9), 64, 48),
                      control_video=video), "takes a camera path, not a control video"),
        (INP, dict(ref_image=torch.rand(3, 48, 64)), "a reference image needs a Control or Control-Camera checkpoint"),
        (CONTROL, dict(control_video=video[:, :5]), "the control video has 5 frames but 9 are requested"),
    ]  # fmt: skip
    for ckpt, extra, message in cases:
        with pytest.raises(ValueError, match=message):
            generate(engine(ckpt), Request(**request, **extra))


def test_api_checks_request_tensors_before_any_work(env, engine, monkeypatch):
    """8-bit or -1..1 pixels, NaN, an HWC image and a camera embedding of another size each gave a wrong video (or a
    puzzling error deep inside) after the text encoder had run; now each is named before anything is loaded."""
    import easyanimate_core.pipeline as pipeline

    def never(*args, **kwargs):
        raise AssertionError("work started before the request was checked")

    monkeypatch.setattr(pipeline, "encode_prompts", never)
    request = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=2, cfg=1.0, seed=1, **SIZE)
    image, video = torch.rand(3, 48, 64), torch.rand(3, 9, 48, 64)
    nan = image.clone()
    nan[0, 3, 4] = float("nan")
    pan = camera.preset("Pan Left", 1.0, 9)
    cases = [
        (INP, dict(start_image=(image * 255).to(torch.uint8)), r"start_image is torch.uint8; give floats in 0..1"),
        (INP, dict(start_image=image * 255), r"start_image has values from .* to 2\d\d but must be in 0..1"),
        (INP, dict(end_image=image * 2 - 1), r"end_image has values from -\d.* must be in 0..1 .*\(x \+ 1\) / 2"),
        (INP, dict(start_image=nan), r"start_image contains NaN"),
        (INP, dict(start_image=image.permute(1, 2, 0)), r"start_image must be \[3, H, W\] or \[3, K, H, W\], got"),
        (INP, dict(start_image=image.numpy()), r"start_image must be a torch.Tensor"),
        (INP, dict(video=video, mask=torch.full((48, 64), 2.0)), r"mask has values from 2 to 2"),
        (CONTROL, dict(control_video=video[:1]), r"control_video must be \[3, T, H, W\]"),
        (CAMERA, dict(camera=camera.plucker_embedding(pan, 96, 48)), r"camera is \(6, 9, 48, 96\) but the video is 9 "
         r"frames of 64x48: compute it with camera.plucker_embedding\(poses, 64, 48\)"),
        (CAMERA, dict(camera=camera.plucker_embedding(pan[:5], 64, 48)), r"camera is \(6, 5, 48, 64\)"),
    ]  # fmt: skip
    for ckpt, extra, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            generate(engine(ckpt), Request(**request, **extra))
    # A bool mask, and pixels a hair outside 0..1 (a resampling overshoot), are fine: the check lets work start.
    with pytest.raises(AssertionError, match="work started"):
        generate(engine(INP), Request(**request, video=video * 1.02, mask=torch.ones(48, 64, dtype=torch.bool)))
