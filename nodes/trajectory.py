"""EasyAnimate Trajectory: point tracks (drawn in the web editor or pasted) -> the Control model's heat-map video."""

from __future__ import annotations

import json
import math

from ..easyanimate_core.conditioning import check_size
from ..easyanimate_core.frames import fit_image
from ..easyanimate_core.trajectory import draw_tracks_preview, fit_tracks, parse_tracks, tracks_to_video
from . import host
from .types import CATEGORY, MAX_SIZE, first_frame, resample_input, size_inputs


def example_tracks(width: int = 672, height: int = 384, frames: int = 49) -> str:
    """One track, one point per frame: a gentle arc from the left third to the right third of the frame."""
    points = []
    for i in range(frames):
        s = i / max(1, frames - 1)
        x, y = width * (0.3 + 0.4 * s), height * (0.6 - 0.2 * math.sin(math.pi * s))
        points.append({"x": round(x, 2), "y": round(y, 2)})
    return json.dumps([points])


def _ref_size_input(name: str, default: int) -> tuple:
    return (
        "INT",
        {
            "default": default,
            "min": 1,
            "max": MAX_SIZE,
            "tooltip": f"{name} in pixels of the canvas the tracks are drawn on (tracks_json's coordinates); "
            "the reference image's size (the editor's 'Use image size' button sets it). A canvas of another "
            "aspect ratio than width x height is scaled to cover the video and centre-cropped, as the reference "
            "image is, so the tracks stay on the same image content. With a reference_image, the canvas is that "
            "image stretched (as the editor shows it), so the crop follows the image's own aspect ratio.",
        },
    )


class EasyAnimateTrajectory:
    DESCRIPTION = (
        "Draw point trajectories over a reference image (in the editor on this node, or paste KJNodes Spline "
        "Editor coordinates into tracks_json): each track becomes a moving Gaussian spot, the control video of the "
        "official trajectory workflow. Feed control_video to EasyAnimate Control Video with the same reference "
        "image as ref_image, on a V5.1 Control checkpoint."
    )
    HAS_INTERMEDIATE_OUTPUT = True  # ComfyUI sends its UI again when the node is cached (0.19+)
    CATEGORY = f"{CATEGORY}/preprocess"
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("control_video", "preview")
    OUTPUT_TOOLTIPS = (
        "The heat-map control video [frames, height, width, 3] at the video size.",
        "The tracks drawn over the reference image as the video sees it (scaled to cover, centre-cropped).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        sizes = size_inputs("video (the control video's size)")
        return {
            "required": {
                "tracks_json": (
                    "STRING",
                    {
                        "default": example_tracks(),
                        "multiline": True,
                        "tooltip": 'The tracks: a JSON list of tracks, each a list of {"x": .., "y": ..} per '
                        "frame in pixels of ref_width x ref_height (the editor writes it; KJNodes Spline Editor "
                        "coordinates can be pasted).",
                    },
                ),
                "ref_width": _ref_size_input("Width", 672),
                "ref_height": _ref_size_input("Height", 384),
                "frames": sizes["frames"],
                "width": sizes["width"],
                "height": sizes["height"],
                "resample": resample_input("track"),
            },
            "optional": {
                "reference_image": (
                    "IMAGE",
                    {
                        "tooltip": "The image to draw over (of a batch, the first); after a run the editor shows "
                        "it. Use the same image as the Control Video's ref_image."
                    },
                ),
            },
        }

    def draw(self, tracks_json, ref_width, ref_height, frames, width, height, resample, reference_image=None):
        check_size(width, height, frames)  # the Control Video it feeds needs a valid size: say so here already
        tracks = parse_tracks(tracks_json, ref_width, ref_height)  # fractions of the canvas
        image = first_frame(reference_image, "reference_image")  # [3, H, W] or None
        # The editor shows the reference image stretched over the canvas, so the fractions are the image's: they
        # are cropped as the image is, with its own aspect ratio when it differs from ref_width x ref_height.
        ref = (ref_width, ref_height) if image is None else (image.shape[-1], image.shape[-2])
        tracks = fit_tracks(tracks, *ref, width, height)
        video = tracks_to_video(tracks, width, height, frames, resample=resample)  # [T, H, W, 3]
        seen = None if image is None else (fit_image(image, width, height).movedim(0, -1) + 1) / 2  # [H, W, 3]
        preview = draw_tracks_preview(seen, tracks, width, height)[None]  # [1, H, W, 3]
        if image is None:
            return (video, preview)
        shown = host.save_temp_png(image.movedim(0, -1), "easyanimate_trajectory")
        return {"ui": {"bg_image": [shown]}, "result": (video, preview)}


NODE_CLASS_MAPPINGS = {"EasyAnimateTrajectory": EasyAnimateTrajectory}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimateTrajectory": "EasyAnimate Trajectory"}
