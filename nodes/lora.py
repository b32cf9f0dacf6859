"""Load EasyAnimate LoRA: stack a LoRA file with a strength onto a transformer handle."""

from __future__ import annotations

import os
import weakref

from ..easyanimate_core import lora as core_lora
from . import host


class LoadEasyAnimateLora:
    DESCRIPTION = (
        "Adds a LoRA to an EasyAnimate transformer. Chain several of these nodes to stack LoRAs. The LoRA is "
        "applied while sampling as a low-rank side branch and never merged into the weights, so it works with "
        "fp8 weights and block swap, and the loaded model stays untouched for other branches of the graph. "
        "Reads EasyAnimate/kohya (lora_unet_...), diffusers/PEFT (lora_A/lora_B) and ComfyUI-style files."
    )
    CATEGORY = "EasyAnimate/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("EASYANIMATE_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The transformer with this LoRA stacked on top of any LoRAs it already had.",)

    def __init__(self) -> None:
        self._cache = None  # (path, mtime, weak model ref, LoadedLora): the last file this node read

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EASYANIMATE_MODEL", {"tooltip": "The EasyAnimate transformer to add the LoRA to."}),
                "lora_name": (
                    host.list_models("loras"),
                    {"tooltip": "A LoRA file from models/loras, trained for this EasyAnimate model."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "How strongly the LoRA applies: 0 turns it off, 1 is as trained, "
                        "negative values push the other way.",
                    },
                ),
            }
        }

    def _read(self, handle, lora_name: str) -> core_lora.LoadedLora:
        path = host.model_path("loras", lora_name)
        mtime = os.path.getmtime(path)
        if self._cache is not None:
            cached_path, cached_mtime, model_ref, lora = self._cache
            if (cached_path, cached_mtime) == (path, mtime) and model_ref() is handle.model:
                return lora  # keeps the tensors already converted for the device
        lora = core_lora.load_lora(path, handle.model, name=lora_name)
        self._cache = (path, mtime, weakref.ref(handle.model), lora)
        return lora

    def load(self, model, lora_name: str, strength: float):
        if strength == 0:
            return (model,)
        return (core_lora.with_lora(model, self._read(model, lora_name), strength),)


NODE_CLASS_MAPPINGS = {"EasyAnimateLoraLoader": LoadEasyAnimateLora}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimateLoraLoader": "Load EasyAnimate LoRA"}
