"""Camera paths for Control-Camera checkpoints: presets, combine, chain, pose files, and the conditioning."""

from __future__ import annotations

import hashlib
import os

from ..easyanimate_core import camera
from ..easyanimate_core.builders import camera_conditioning
from . import host
from .types import (
    CAMERA,
    CATEGORY,
    COND,
    MODEL,
    VAE,
    CameraPath,
    VideoConditioning,
    first_frame,
    resample_input,
    size_inputs,
    vae_encoding,
)

NO_POSE_FILE = "(no .txt file in the input folder)"


def _frames_input(what: str) -> tuple:
    return (
        "INT",
        {
            "default": 49,
            "min": 1,
            "max": 1025,
            "tooltip": f"Number of frames of the {what}; the same as the video's frames (49 for the official "
            "settings).",
        },
    )


def _camera_input(what: str) -> tuple:
    return (CAMERA, {"tooltip": what})


class EasyAnimateCameraPreset:
    DESCRIPTION = (
        "A basic camera motion (pan, zoom, roll) over the video, as the official CameraBasic node. Combine several "
        "with EasyAnimate Camera Combine, play them one after another with EasyAnimate Camera Chain, and feed the "
        "result to EasyAnimate Camera Control."
    )
    CATEGORY = f"{CATEGORY}/camera"
    FUNCTION = "make"
    RETURN_TYPES = (CAMERA,)
    RETURN_NAMES = ("camera",)
    OUTPUT_TOOLTIPS = ("The camera path, one pose per frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": (
                    list(camera.PRESETS),
                    {
                        "default": "Pan Left",
                        "tooltip": "The motion: pans move the camera, Zoom moves it along its "
                        "view, ACW/CW roll it anticlockwise/clockwise.",
                    },
                ),
                "speed": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "How far the camera moves over the clip (1 = the official amount).",
                    },
                ),
                "frames": _frames_input("camera path"),
            },
            "optional": {
                name: (
                    "FLOAT",
                    {
                        "default": default,
                        "min": 0.01 if name in ("fx", "fy") else 0.0,
                        "max": 4.0 if name in ("fx", "fy") else 1.0,
                        "step": 0.000000001 if name in ("fx", "fy") else 0.01,  # the official node's steps
                        "tooltip": tip + " The default is the official workflow's (square pixels at 16:9).",
                    },
                )
                for name, default, tip in zip(
                    ("fx", "fy", "cx", "cy"),
                    camera.DEFAULT_INTRINSICS,
                    (
                        "Focal length as a fraction of the frame width (smaller = wider view).",
                        "Focal length as a fraction of the frame height.",
                        "Principal point x as a fraction of the width (0.5 = centre).",
                        "Principal point y as a fraction of the height (0.5 = centre).",
                    ),
                )
            },
        }

    def make(self, motion: str, speed: float, frames: int, **intrinsics: float):
        """``fx, fy, cx, cy`` as the official CameraTrajectory node sets them (defaults: the official workflow's)."""
        values = tuple(intrinsics.get(k, d) for k, d in zip(("fx", "fy", "cx", "cy"), camera.DEFAULT_INTRINSICS))
        return (CameraPath(tuple(camera.preset(motion, speed, frames, intrinsics=values))),)


class EasyAnimateCameraCombine:
    DESCRIPTION = (
        "Camera motions applied together, frame by frame (e.g. Pan Up + Zoom In moves diagonally forward): "
        "translations add up, rotations compose. All paths need the same number of frames."
    )
    CATEGORY = f"{CATEGORY}/camera"
    FUNCTION = "combine"
    RETURN_TYPES = (CAMERA,)
    RETURN_NAMES = ("camera",)
    OUTPUT_TOOLTIPS = ("The combined camera path (the frame count of its inputs).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "camera_a": _camera_input("A camera path (EasyAnimate Camera Preset, Pose File, Combine or Chain)."),
                "camera_b": _camera_input("A camera path applied together with camera_a."),
            },
            "optional": {
                "camera_c": _camera_input("Optional: a third camera path applied together with the others."),
                "camera_d": _camera_input("Optional: a fourth camera path applied together with the others."),
            },
        }

    def combine(self, camera_a, camera_b, camera_c=None, camera_d=None):
        paths = [c for c in (camera_a, camera_b, camera_c, camera_d) if c is not None]
        return (CameraPath(tuple(camera.combine(*(list(p.poses) for p in paths)))),)


class EasyAnimateCameraChain:
    DESCRIPTION = (
        "Camera motions one after another: each path continues from where the previous one ended. The shared pose "
        "is kept once, so two 25-frame paths make 49 frames."
    )
    CATEGORY = f"{CATEGORY}/camera"
    FUNCTION = "chain"
    RETURN_TYPES = (CAMERA,)
    RETURN_NAMES = ("camera",)
    OUTPUT_TOOLTIPS = ("The chained camera path: the inputs' frames added up, less one per join.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "camera_a": _camera_input("The first camera motion."),
                "camera_b": _camera_input("The motion that follows camera_a."),
            },
            "optional": {
                "camera_c": _camera_input("Optional: the motion that follows camera_b."),
                "camera_d": _camera_input("Optional: the motion that follows camera_c."),
            },
        }

    def chain(self, camera_a, camera_b, camera_c=None, camera_d=None):
        paths = [c for c in (camera_a, camera_b, camera_c, camera_d) if c is not None]
        return (CameraPath(tuple(camera.chain(*(list(p.poses) for p in paths)))),)


def _pose_files() -> list[str]:
    """The .txt files of the input folder (as Load Image lists images), or a placeholder when there are none."""
    folder = host.input_directory()
    names = []
    if os.path.isdir(folder):
        names = [
            n for n in os.listdir(folder) if n.lower().endswith(".txt") and os.path.isfile(os.path.join(folder, n))
        ]
    return sorted(names) or [NO_POSE_FILE]


def _read_pose_text(pose_file: str, pose_path: str) -> str:
    """The pose text: pasted lines in pose_path, the file pose_path names, or else pose_file from the input folder."""
    source = pose_path.strip()
    tokens = source.split()
    if "\n" in source or (len(tokens) >= camera.POSE_LINE_VALUES and camera._is_number(tokens[0])):
        return source  # the pose lines themselves (one pasted line has no newline left after strip)
    if source:
        path = os.path.expanduser(source)
        path = path if os.path.isabs(path) else os.path.join(host.input_directory(), path)
    elif pose_file == NO_POSE_FILE:
        raise ValueError(
            f"no pose file: put a CameraCtrl/RealEstate10K .txt pose file in the input folder "
            f"({host.input_directory()}), or give its path (or its lines) in pose_path"
        )
    else:
        path = host.annotated_input_path(pose_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pose file not found: {path} (relative paths are in the ComfyUI input folder)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        binary = "\0" in text  # valid UTF-8 can still be binary
    except UnicodeDecodeError:
        binary, text = True, ""
    if binary:
        raise ValueError(
            f"{path} is not a text pose file: choose a CameraCtrl/RealEstate10K .txt file (one pose per line)"
        )
    return text


class EasyAnimateLoadCameraPose:
    DESCRIPTION = (
        "Loads a camera path from a CameraCtrl / RealEstate10K pose file (.txt: one line per frame, "
        "'timestamp fx fy cx cy 0 0' then the 3x4 world-to-camera matrix), e.g. those in EasyAnimate's asset/ "
        "folder. Lists the .txt files of the ComfyUI input folder; pose_path can name any file or hold the lines."
    )
    CATEGORY = f"{CATEGORY}/camera"
    FUNCTION = "load"
    RETURN_TYPES = (CAMERA,)
    RETURN_NAMES = ("camera",)
    OUTPUT_TOOLTIPS = ("The camera path from the file, one pose per frame.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_file": (_pose_files(), {"tooltip": "A .txt pose file in the ComfyUI input folder."}),
                "frames": _frames_input("video"),
                "resample": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "When the file (after stride) has another pose count than frames: on spreads "
                        "its poses evenly over the frames; off uses the first 'frames' poses, as EasyAnimate does, "
                        "and stops with an error when there are fewer.",
                    },
                ),
            },
            "optional": {
                "pose_path": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Instead of pose_file: a path to a pose file (relative paths are in the input "
                        "folder), or the pose lines themselves. Leave empty to use pose_file.",
                    },
                ),
                "stride": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 24,
                        "tooltip": "Use every stride-th pose, from the first. RealEstate10K / CameraCtrl files are "
                        "24 fps and EasyAnimate makes 8 fps videos: 3 moves the camera as EasyAnimate's "
                        "predict_v2v_control.py does. Without resample the first 'frames' poses are used.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, pose_file=None, pose_path="", **_):
        # ComfyUI leaves out inputs wired to another node (None here); then the text depends on that node's
        # output, whose own signature decides whether this node runs again (NaN would re-run the sampler on every
        # queue). A file edited in place under a wired name is not seen: re-queue with the node cache cleared.
        if pose_path is None or (pose_file is None and not pose_path.strip()):
            return "wired"
        try:
            text = _read_pose_text(pose_file or "", pose_path)
        except (OSError, ValueError):
            return float("nan")  # never equal: the run reports the problem
        return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()

    def load(self, pose_file: str, frames: int, resample: bool, pose_path: str = "", stride: int = 1):
        poses = camera.parse_pose_file(_read_pose_text(pose_file, pose_path), frames, resample, stride)
        return (CameraPath(tuple(poses)),)


class EasyAnimateCameraControl:
    DESCRIPTION = (
        "Turns a camera path into conditioning for EasyAnimate Sampler: the Plücker ray embedding of every frame at "
        "the video size. Needs a Control-Camera checkpoint (e.g. EasyAnimateV5.1-12b-zh-Control-Camera); the "
        "reference image sets the look of the first frame."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Camera conditioning for EasyAnimate Sampler (same width, height and frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate Control-Camera transformer the conditioning is for."}),
                "vae": (VAE, {"tooltip": "The EasyAnimate VAE that encodes the reference image."}),
                "camera": _camera_input("The camera path (Camera Preset, Combine, Chain or Load Camera Pose File)."),
                **size_inputs("video"),
                "resample": resample_input("camera path"),
            },
            "optional": {
                "ref_image": (
                    "IMAGE",
                    {"tooltip": "An image the video starts from in look and content (of a batch, the first)."},
                ),
            },
        }

    def encode(self, model, vae, camera, width: int, height: int, frames: int, resample: bool, ref_image=None):
        cond = camera_conditioning(
            vae,
            model.config,
            list(camera.poses),
            first_frame(ref_image, "ref_image"),
            width,
            height,
            frames,
            resample=resample,
            **vae_encoding(vae, width, height),
        )
        return (VideoConditioning(cond, width, height, frames, model.config.variant.value),)


NODE_CLASS_MAPPINGS = {
    "EasyAnimateCameraPreset": EasyAnimateCameraPreset,
    "EasyAnimateCameraCombine": EasyAnimateCameraCombine,
    "EasyAnimateCameraChain": EasyAnimateCameraChain,
    "EasyAnimateLoadCameraPose": EasyAnimateLoadCameraPose,
    "EasyAnimateCameraControl": EasyAnimateCameraControl,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EasyAnimateCameraPreset": "EasyAnimate Camera Preset",
    "EasyAnimateCameraCombine": "EasyAnimate Camera Combine",
    "EasyAnimateCameraChain": "EasyAnimate Camera Chain",
    "EasyAnimateLoadCameraPose": "EasyAnimate Load Camera Pose File",
    "EasyAnimateCameraControl": "EasyAnimate Camera Control",
}
