"""Stand-in for `comfy_extras/nodes_video.py`: LoadVideo, GetVideoComponents, CreateVideo, SaveVideo.

ComfyUI defines these as V3 nodes (`io.ComfyNode`); here they are V1 classes with the same /object_info
(node ids, display names, inputs, options, outputs and output names as `Schema.get_v1_info` gives them).
Video files are read and written with imageio's ffmpeg plugin instead of PyAV; the VIDEO objects keep
the methods of `comfy_api` `VideoFromFile` / `VideoFromComponents` that these nodes use.
"""

import dataclasses
import json
import os
from fractions import Fraction

import folder_paths
import imageio.v2 as imageio
import numpy as np
import torch
from comfy.cli_args import args


@dataclasses.dataclass
class VideoComponents:
    """comfy_api Types.VideoComponents: images [T, H, W, 3] float 0..1, audio or None, frame rate."""

    images: torch.Tensor
    audio: object = None
    frame_rate: Fraction = Fraction(30)


class VideoFromComponents:
    def __init__(self, components: VideoComponents):
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        return self._components.images.shape[2], self._components.images.shape[1]

    def save_to(self, path: str, format: str = "auto", codec: str = "auto", metadata: dict | None = None) -> None:
        """An H.264 mp4 (what "auto" gives in ComfyUI); metadata entries are JSON strings, as ComfyUI writes."""
        params = ["-movflags", "use_metadata_tags"]
        for key, value in (metadata or {}).items():
            params += ["-metadata", f"{key}={json.dumps(value)}"]
        frames = np.clip(self._components.images[..., :3].cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
        fps = float(self._components.frame_rate)
        with imageio.get_writer(
            path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2,
            output_params=params,
        ) as writer:  # fmt: skip
            for frame in frames:
                writer.append_data(frame)


class VideoFromFile:
    def __init__(self, path: str):
        self._path = path

    def get_components(self) -> VideoComponents:
        reader = imageio.get_reader(self._path, format="FFMPEG")
        try:
            fps = reader.get_meta_data().get("fps") or 30
            frames = np.stack([frame[..., :3] for frame in reader])
        finally:
            reader.close()
        images = torch.from_numpy(frames.astype(np.float32) / 255.0)
        return VideoComponents(images=images, audio=None, frame_rate=Fraction(round(fps * 1000), 1000))

    def get_dimensions(self) -> tuple[int, int]:
        images = self.get_components().images
        return images.shape[2], images.shape[1]


class SaveVideo:
    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "video": ("VIDEO", {"tooltip": "The video to save."}),
                "filename_prefix": ("STRING", {"default": "video/ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}),
                "format": (["auto", "mp4"], {"default": "auto", "tooltip": "The format to save the video as."}),
                "codec": (["auto", "h264"], {"default": "auto", "tooltip": "The codec to use for the video."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }  # fmt: skip

    RETURN_TYPES = ()
    FUNCTION = "execute"
    OUTPUT_NODE = True
    CATEGORY = "image/video"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."
    SEARCH_ALIASES = ["export video"]

    def execute(self, video, filename_prefix, format, codec, prompt=None, extra_pnginfo=None):
        width, height = video.get_dimensions()
        full_output_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height
        )
        saved_metadata = None
        if not args.disable_metadata:
            metadata = dict(extra_pnginfo or {})
            if prompt is not None:
                metadata["prompt"] = prompt
            saved_metadata = metadata or None
        file = f"{filename}_{counter:05}_.mp4"
        video.save_to(os.path.join(full_output_folder, file), format=format, codec=codec, metadata=saved_metadata)
        return {"ui": {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": (True,)}}


class CreateVideo:
    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}),
            },
            "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})},
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("VIDEO",)
    FUNCTION = "execute"
    CATEGORY = "image/video"
    DESCRIPTION = "Create a video from images."
    SEARCH_ALIASES = ["images to video"]

    def execute(self, images, fps, audio=None):
        return (VideoFromComponents(VideoComponents(images=images, audio=audio, frame_rate=Fraction(fps))),)


class GetVideoComponents:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"video": ("VIDEO", {"tooltip": "The video to extract components from."})}}

    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "execute"
    CATEGORY = "image/video"
    DESCRIPTION = "Extracts all components from a video: frames, audio, and framerate."
    SEARCH_ALIASES = ["extract frames", "split video", "video to images", "demux"]

    def execute(self, video):
        components = video.get_components()
        return (components.images, components.audio, float(components.frame_rate))


class LoadVideo:
    @classmethod
    def INPUT_TYPES(s):
        input_dir = folder_paths.get_input_directory()
        files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
        files = folder_paths.filter_files_content_types(files, ["video"])
        return {"required": {"file": (sorted(files), {"video_upload": True})}}

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("VIDEO",)
    FUNCTION = "execute"
    CATEGORY = "image/video"
    SEARCH_ALIASES = ["import video", "open video", "video file"]

    def execute(self, file):
        return (VideoFromFile(folder_paths.get_annotated_filepath(file)),)

    @classmethod
    def IS_CHANGED(s, file):  # V3's fingerprint_inputs
        return os.path.getmtime(folder_paths.get_annotated_filepath(file))

    @classmethod
    def VALIDATE_INPUTS(s, file):
        if not folder_paths.exists_annotated_filepath(file):
            return f"Invalid video file: {file}"
        return True


NODE_CLASS_MAPPINGS = {
    "SaveVideo": SaveVideo,
    "CreateVideo": CreateVideo,
    "GetVideoComponents": GetVideoComponents,
    "LoadVideo": LoadVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SaveVideo": "Save Video",
    "CreateVideo": "Create Video",
    "GetVideoComponents": "Extract frame",
    "LoadVideo": "Load Video",
}
