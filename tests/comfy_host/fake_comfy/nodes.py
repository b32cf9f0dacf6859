"""Stand-in for ComfyUI's `nodes.py`: the node registry, `load_custom_node`, and the core image nodes.

The nodes keep ComfyUI's INPUT_TYPES, RETURN_TYPES, FUNCTION and OUTPUT_NODE and really work
(files are read from the input folder and written to the output folder).
"""

import hashlib
import importlib.util
import json
import logging
import os
import random
import sys

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy.cli_args import args
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

MAX_RESOLUTION = 16384

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
EXTENSION_WEB_DIRS: dict[str, str] = {}
LOADED_MODULE_DIRS: dict[str, str] = {}


def before_node_execution():
    comfy.model_management.throw_exception_if_processing_interrupted()


def interrupt_processing(value=True):
    comfy.model_management.interrupt_current_processing(value)


def _to_pil(image: torch.Tensor) -> Image.Image:
    """[H, W, C] 0..1 -> PIL."""
    return Image.fromarray(np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8))


class SaveImage:
    def __init__(self):
        self.output_dir = folder_paths.get_output_directory()
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        filename_prefix += self.prefix_append
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, self.output_dir, images[0].shape[1], images[0].shape[0]
        )
        results = []
        for batch_number, image in enumerate(images):
            metadata = None
            if not args.disable_metadata:
                metadata = PngInfo()
                if prompt is not None:
                    metadata.add_text("prompt", json.dumps(prompt))
                for key, value in (extra_pnginfo or {}).items():
                    metadata.add_text(key, json.dumps(value))
            file = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
            _to_pil(image).save(os.path.join(folder, file), pnginfo=metadata, compress_level=self.compress_level)
            results.append({"filename": file, "subfolder": subfolder, "type": self.type})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    def __init__(self):
        self.output_dir = folder_paths.get_temp_directory()
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}


class LoadImage:
    @classmethod
    def INPUT_TYPES(s):
        input_dir = folder_paths.get_input_directory()
        files = [f for f in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, f))]
        files = folder_paths.filter_files_content_types(files, ["image"])
        return {"required": {"image": (sorted(files), {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image):
        img = Image.open(folder_paths.get_annotated_filepath(image))
        images, masks = [], []
        size = None
        for frame in ImageSequence.Iterator(img):
            frame = ImageOps.exif_transpose(frame)
            rgb = frame.convert("RGB")
            size = size or rgb.size
            if rgb.size != size:
                continue
            images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
            if "A" in frame.getbands():
                alpha = torch.from_numpy(np.array(frame.getchannel("A")).astype(np.float32) / 255.0)
                masks.append((1.0 - alpha)[None])
            else:
                masks.append(torch.zeros((1, 64, 64), dtype=torch.float32))
        if len(images) > 1 and img.format != "MPO":
            return (torch.cat(images, dim=0), torch.cat(masks, dim=0))
        return (images[0], masks[0])

    @classmethod
    def IS_CHANGED(s, image):
        with open(folder_paths.get_annotated_filepath(image), "rb") as f:
            return hashlib.sha256(f.read()).digest().hex()

    @classmethod
    def VALIDATE_INPUTS(s, image):
        if not folder_paths.exists_annotated_filepath(image):
            return f"Invalid image file: {image}"
        return True


class ImageScale:
    upscale_methods = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    crop_methods = ["disabled", "center"]

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (s.upscale_methods,),
                "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
                "crop": (s.crop_methods,),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        samples = image.movedim(-1, 1)  # [B, H, W, C] -> [B, C, H, W]
        if width == 0:
            width = max(1, round(samples.shape[3] * height / samples.shape[2]))
        elif height == 0:
            height = max(1, round(samples.shape[2] * width / samples.shape[3]))
        return (comfy.utils.common_upscale(samples, width, height, upscale_method, crop).movedim(1, -1),)


class EmptyImage:
    def __init__(self, device="cpu"):
        self.device = device

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width, height, batch_size=1, color=0):
        channels = [
            torch.full([batch_size, height, width, 1], ((color >> shift) & 0xFF) / 0xFF) for shift in (16, 8, 0)
        ]
        return (torch.cat(channels, dim=-1),)


class SetLatentNoiseMask:
    """ComfyUI's: the mask rides along in the LATENT dict as ``noise_mask`` [N, 1, H, W]."""

    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"
    CATEGORY = "latent/inpaint"

    def set_mask(self, samples, mask):
        s = samples.copy()
        s["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (s,)


class SolidMask:
    """comfy_extras/nodes_mask.py's: one mask [1, H, W] of a single value."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "solid"
    CATEGORY = "mask"

    def solid(self, value, width, height):
        return (torch.full((1, height, width), value, dtype=torch.float32, device="cpu"),)


NODE_CLASS_MAPPINGS.update(
    {
        "SetLatentNoiseMask": SetLatentNoiseMask,
        "SolidMask": SolidMask,
        "SaveImage": SaveImage,
        "PreviewImage": PreviewImage,
        "LoadImage": LoadImage,
        "ImageScale": ImageScale,
        "EmptyImage": EmptyImage,
    }
)
NODE_DISPLAY_NAME_MAPPINGS.update(
    {
        "SetLatentNoiseMask": "Set Latent Noise Mask",
        "SolidMask": "SolidMask",
        "SaveImage": "Save Image",
        "PreviewImage": "Preview Image",
        "LoadImage": "Load Image",
        "ImageScale": "Upscale Image",
    }
)


def get_module_name(module_path: str) -> str:
    base_path = os.path.basename(module_path)
    if os.path.isfile(module_path):
        base_path = os.path.splitext(base_path)[0]
    return base_path


def load_custom_node(module_path: str, ignore=frozenset(), module_parent="custom_nodes", raise_errors=False) -> bool:
    """ComfyUI's loader (synchronous here). A folder is imported under its whole path with "." -> "_x_"."""
    module_name = get_module_name(module_path)
    if os.path.isfile(module_path):
        sys_module_name = os.path.splitext(module_path)[0]
        spec = importlib.util.spec_from_file_location(sys_module_name, module_path)
        module_dir = os.path.split(module_path)[0]
    else:
        sys_module_name = module_path.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
        module_dir = module_path
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[sys_module_name] = module
        spec.loader.exec_module(module)
    except Exception:
        if raise_errors:
            raise
        logging.warning("Cannot import %s module for custom nodes", module_path, exc_info=True)
        return False
    LOADED_MODULE_DIRS[module_name] = os.path.abspath(module_dir)
    web = getattr(module, "WEB_DIRECTORY", None)
    if web is not None and os.path.isdir(os.path.abspath(os.path.join(module_dir, web))):
        EXTENSION_WEB_DIRS[module_name] = os.path.abspath(os.path.join(module_dir, web))
    if getattr(module, "NODE_CLASS_MAPPINGS", None) is None:
        logging.warning("Skip %s module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.", module_path)
        return False
    for name, node_cls in module.NODE_CLASS_MAPPINGS.items():
        if name not in ignore:
            NODE_CLASS_MAPPINGS[name] = node_cls
            node_cls.RELATIVE_PYTHON_MODULE = f"{module_parent}.{get_module_name(module_path)}"
    for name, display_name in (getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}).items():
        if name not in ignore:  # current ComfyUI: a pack cannot rename a core node either
            NODE_DISPLAY_NAME_MAPPINGS[name] = display_name
    return True


def init_extra_nodes() -> list[str]:
    """Registers the comfy_extras nodes (only the image and video ones here); -> the files that failed."""
    extras = os.path.join(os.path.dirname(os.path.realpath(__file__)), "comfy_extras")
    failed = []
    for name in ("nodes_images.py", "nodes_video.py"):
        path = os.path.join(extras, name)
        if not load_custom_node(path, module_parent="comfy_extras", raise_errors=True):
            failed.append(path)
    return failed
