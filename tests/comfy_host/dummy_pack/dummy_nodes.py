"""Dummy nodes covering the node-definition features the harness must handle."""

import comfy.model_management
import comfy.utils
import torch


class AnyType(str):
    """The custom-node idiom for a wildcard input: `__ne__` says every type matches."""

    def __ne__(self, other):
        return False


class DummySource:
    DESCRIPTION = "Makes a DUMMY value from a seed, a mode and a strength."
    CATEGORY = "dummy/sources"
    RETURN_TYPES = ("DUMMY", "INT")
    RETURN_NAMES = ("dummy", "seed")
    OUTPUT_TOOLTIPS = ("The value.", "The seed, passed on.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "mode": (["add", "mul"], {"default": "add"}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05}),
            }
        }

    def make(self, seed, mode, strength):
        value = seed + strength if mode == "add" else seed * strength
        return ({"value": value}, seed)


class DummyCombine:
    CATEGORY = "dummy"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dummy": ("DUMMY",),
                "count": ("INT", {"forceInput": True}),
            },
            "optional": {
                "extra": ("DUMMY",),
                "label": ("STRING", {"default": "sum", "multiline": False}),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def combine(self, dummy, count, extra=None, label="sum", unique_id=None, prompt=None):
        total = dummy["value"] * count + (extra["value"] if extra else 0)
        return (f"{label}={total:g} node={unique_id} nodes={len(prompt)}",)


class DummyList:
    CATEGORY = "dummy/lists"
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"length": ("INT", {"default": 3, "min": 1, "max": 10})}}

    def make(self, length):
        return (list(range(length)),)


class DummyDouble:
    """Called once per list item (no INPUT_IS_LIST)."""

    CATEGORY = "dummy/lists"
    RETURN_TYPES = ("INT",)
    FUNCTION = "double"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    def double(self, value):
        return (2 * value,)


class DummyShow:
    """An output node that takes whole lists and shows them."""

    CATEGORY = "dummy"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    FUNCTION = "show"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (AnyType("*"),)}}

    def show(self, value):
        return {"ui": {"text": [str(v) for v in value]}}


class DummyProgress:
    """Reports progress like a sampler: a ProgressBar, previews, and interrupt checks."""

    CATEGORY = "dummy"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 3, "min": 1, "max": 100}),
                "interrupt_at": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": "0: never"}),
            }
        }

    def run(self, steps, interrupt_at):
        import latent_preview

        previewer = latent_preview.Latent2RGBPreviewer([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        bar = comfy.utils.ProgressBar(steps)
        for step in range(1, steps + 1):
            if step == interrupt_at:  # what the /interrupt route does from another thread
                comfy.model_management.interrupt_current_processing()
            latents = torch.zeros(1, 3, 2, 8, 8)  # [B, C, T, H, W]
            bar.update_absolute(step, steps, previewer.decode_latent_to_preview_image("JPEG", latents))
        return (f"done {steps}",)


class DummyTyped:
    """VALIDATE_INPUTS in its `input_types` form: the harness must skip the link type check."""

    CATEGORY = "dummy"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    DEPRECATED = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        if input_types.get("value") not in ("INT", "STRING"):
            return f"value must be INT or STRING, not {input_types.get('value')}"
        return True

    def run(self, value):
        return (str(value),)


class DummyFail:
    CATEGORY = "dummy"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "boom"})}}

    def run(self, message):
        raise ValueError(message)


NODE_CLASS_MAPPINGS = {
    "DummySource": DummySource,
    "DummyCombine": DummyCombine,
    "DummyList": DummyList,
    "DummyDouble": DummyDouble,
    "DummyShow": DummyShow,
    "DummyProgress": DummyProgress,
    "DummyTyped": DummyTyped,
    "DummyFail": DummyFail,
    "SaveImage": DummyFail,  # a core name: ComfyUI ignores it
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DummySource": "Dummy Source",
    "DummyShow": "Dummy Show",
    "SaveImage": "Dummy Fail",  # ignored too (current ComfyUI; 0.3.64 applied it to the core node)
}
