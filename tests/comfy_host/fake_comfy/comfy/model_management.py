"""Stand-in for `comfy/model_management.py`: devices, cache and the interrupt flag.

The interrupt functions keep ComfyUI's exact semantics: `throw_exception_if_processing_interrupted`
clears the flag when it raises, and `processing_interrupted` only reads it.
"""

import os
import threading

import torch


class InterruptProcessingException(
    BaseException
):  # current ComfyUI (an Exception up to 0.3.64): `except Exception` misses it
    pass


OOM_EXCEPTION = torch.cuda.OutOfMemoryError  # as ComfyUI sets it (torch.OutOfMemoryError, the same class, since 2.5)


DISABLE_SMART_MEMORY = False

interrupt_processing_mutex = threading.RLock()
interrupt_processing = False


def get_torch_device() -> torch.device:
    """The CPU, unless EASYANIMATE_HARNESS_DEVICE names another (e.g. cuda, to run the workflows on a GPU)."""
    return torch.device(os.environ.get("EASYANIMATE_HARNESS_DEVICE", "cpu"))


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return device is not None and torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def soft_empty_cache(force: bool = False) -> None:
    pass


def cleanup_models_gc() -> None:
    pass


def unload_all_models() -> None:
    pass


EXTRA_RESERVED_VRAM = 400 * 1024 * 1024  # ComfyUI's default on Linux (--reserve-vram changes it)


def extra_reserved_memory() -> int:
    return EXTRA_RESERVED_VRAM


free_memory_calls: list = []  # (memory_required, device) of every free_memory call, for tests to read


def free_memory(memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0, ram_required=0):  # noqa: B006 - ComfyUI's signature
    """ComfyUI unloads the models it manages on ``device`` until ``memory_required`` bytes are free; none here."""
    free_memory_calls.append((memory_required, device))
    return []


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        interrupt_processing = value


def processing_interrupted() -> bool:
    with interrupt_processing_mutex:
        return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    with interrupt_processing_mutex:
        if interrupt_processing:
            interrupt_processing = False
            raise InterruptProcessingException()
