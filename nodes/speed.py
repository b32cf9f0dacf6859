"""EasyAnimate Speed Options: attention backend and torch.compile for a model handle."""

from __future__ import annotations

from ..easyanimate_core.attention import BACKENDS
from ..easyanimate_core.runner import COMPILE_BACKENDS, check_inductor_device, check_speed_options
from . import host
from .types import CATEGORY, MODEL

COMPILE_CHOICES = ["off", *COMPILE_BACKENDS]


class EasyAnimateSpeedOptions:
    DESCRIPTION = (
        "Chooses how the transformer computes: the attention backend (sdpa is built into PyTorch; flash-attn and "
        "SageAttention must be installed separately), torch.compile of the transformer blocks (the first run at "
        "each video size compiles first, 13-20 s for the 12B on an H200; later runs at that size are faster) and "
        "fp8 matrix multiplies for fp8 weights. Returns a new model handle; the loaded model is not changed."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "apply"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model with these speed options.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "The EasyAnimate transformer to run with these options."}),
                "attention": (
                    list(BACKENDS),
                    {
                        "default": "sdpa",
                        "tooltip": "sdpa: PyTorch's scaled_dot_product_attention (always available; on H100/H200 "
                        "it already uses cuDNN's fast kernel). flash: flash-attn 2 (pip install flash-attn). flash3: "
                        "FlashAttention 3 (flash_attn_interface, built from flash-attention's hopper/ folder; "
                        "H100/H200). sage: SageAttention (pip install sageattention), quantised attention, fastest "
                        "on RTX 30/40 at a small quality cost.",
                    },
                ),
                "compile": (
                    COMPILE_CHOICES,
                    {
                        "default": "off",
                        "tooltip": "torch.compile the transformer blocks with this backend (inductor is the usual "
                        "choice; on NVIDIA/AMD GPUs it needs Triton: pip install triton, on Windows triton-windows). "
                        "Not combinable with block swap.",
                    },
                ),
                "fp8_matmul": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Multiply the fp8-stored transformer weights in fp8 (each token's activations "
                        "scaled into fp8 first) instead of converting the weights to bf16 for every layer: faster "
                        "on GPUs with fp8 tensor cores (RTX 40xx, L4, L40, H100, H200), slightly less exact. Needs "
                        "memory mode fp8 on the loader.",
                    },
                ),
            }
        }

    def apply(self, model, attention: str, compile: str, fp8_matmul: bool = False):
        compile = None if compile == "off" else compile
        check_speed_options(model.memory, attention, compile, fp8_matmul=fp8_matmul)
        if compile == "inductor":
            check_inductor_device(host.torch_device())
        return (model.replace(attention=attention, compile=compile, compiled={}, fp8_matmul=fp8_matmul),)


NODE_CLASS_MAPPINGS = {"EasyAnimateSpeedOptions": EasyAnimateSpeedOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimateSpeedOptions": "EasyAnimate Speed Options"}
