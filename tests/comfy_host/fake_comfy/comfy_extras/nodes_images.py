"""Stand-in for `comfy_extras/nodes_images.py`: ImageFromBatch and the animated image savers."""

import json
import os

import folder_paths
import numpy as np
from comfy.cli_args import args
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def _pil_frames(images) -> list[Image.Image]:
    """[B, H, W, C] 0..1 -> list of PIL frames."""
    return [Image.fromarray(np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)) for image in images]


def webp_exif(frame: Image.Image, prompt, extra_pnginfo) -> Image.Exif:
    """SaveAnimatedWEBP's metadata: EXIF 0x0110 (Model) "prompt:<json>", then one tag per extra_pnginfo entry
    from 0x010F (Make) downwards, "<key>:<json>" ("workflow:..." is what the frontend reads back)."""
    exif = frame.getexif()
    if not args.disable_metadata:
        if prompt is not None:
            exif[0x0110] = f"prompt:{json.dumps(prompt)}"
        for tag, (key, value) in zip(range(0x010F, 0, -1), (extra_pnginfo or {}).items()):
            exif[tag] = f"{key}:{json.dumps(value)}"
    return exif


def apng_info(prompt, extra_pnginfo) -> PngInfo | None:
    """SaveAnimatedPNG's metadata: private "comf" chunks after the image data, "<key>\\0<json>" each."""
    if args.disable_metadata:
        return None
    info = PngInfo()
    entries = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
    for key, value in entries:
        info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), after_idat=True)
    return info


class ImageFromBatch:
    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "image": ("IMAGE",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                "length": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"
    CATEGORY = "image/batch"

    def frombatch(self, image, batch_index, length):
        batch_index = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index : batch_index + length].clone(),)


class SaveAnimatedWEBP:
    methods = {"default": 4, "fastest": 0, "slowest": 6}

    def __init__(self):
        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (list(s.methods.keys()),),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image/animation"

    def save_images(
        self, images, fps, filename_prefix, lossless, quality, method, num_frames=0, prompt=None, extra_pnginfo=None
    ):
        method = self.methods.get(method)
        filename_prefix += self.prefix_append
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0]
        )
        frames = _pil_frames(images)
        exif = webp_exif(frames[0], prompt, extra_pnginfo)
        num_frames = num_frames or len(frames)
        results = []
        for i in range(0, len(frames), num_frames):
            file = f"{filename}_{counter:05}_.webp"
            frames[i].save(
                os.path.join(folder, file),
                save_all=True,
                duration=int(1000.0 / fps),
                append_images=frames[i + 1 : i + num_frames],
                exif=exif,
                lossless=lossless,
                quality=quality,
                method=method,
            )
            results.append({"filename": file, "subfolder": subfolder, "type": self.type})
            counter += 1
        return {"ui": {"images": results, "animated": (num_frames != 1,)}}


class SaveAnimatedPNG:
    def __init__(self):
        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
                "compress_level": ("INT", {"default": 4, "min": 0, "max": 9}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image/animation"

    def save_images(self, images, fps, compress_level, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        filename_prefix += self.prefix_append
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0]
        )
        frames = _pil_frames(images)
        file = f"{filename}_{counter:05}_.png"
        frames[0].save(
            os.path.join(folder, file),
            pnginfo=apng_info(prompt, extra_pnginfo),
            compress_level=compress_level,
            save_all=True,
            duration=int(1000.0 / fps),
            append_images=frames[1:],
        )
        return {"ui": {"images": [{"filename": file, "subfolder": subfolder, "type": self.type}], "animated": (True,)}}


NODE_CLASS_MAPPINGS = {
    "ImageFromBatch": ImageFromBatch,
    "SaveAnimatedWEBP": SaveAnimatedWEBP,
    "SaveAnimatedPNG": SaveAnimatedPNG,
}
