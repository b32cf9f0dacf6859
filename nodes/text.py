"""EasyAnimate Text Encode: prompt and negative prompt -> embeddings, cached by content."""

from __future__ import annotations

import weakref
from collections import OrderedDict

from ..easyanimate_core.memory import encoder_vram_bytes
from ..easyanimate_core.runner import encode_prompts
from . import host
from .types import CATEGORY, EMBEDS, TEXT_ENCODER

# The negative prompt of EasyAnimate V5.1's predict_t2v.py / predict_i2v.py.
DEFAULT_NEGATIVE_PROMPT = "扭曲的身体，肢体残缺，文本字幕，漫画，静止，丑陋，错误，乱码。"
CACHE_SIZE = 8


class EasyAnimatePromptEncode:
    DESCRIPTION = (
        "Encodes a prompt and a negative prompt with EasyAnimate's text encoder (English or Chinese). The "
        "embeddings are reused by any number of sampler runs; the last few prompt pairs are kept, so switching "
        "back to an earlier prompt does not run the text encoder again."
    )
    CATEGORY = f"{CATEGORY}/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Positive and negative prompt embeddings for EasyAnimate Sampler.",)

    def __init__(self) -> None:
        # (prompt, negative) -> PromptEmbeds for one text encoder, the most recent last; bounded.
        self._encoder = None  # weakref to the TextEncoder the cache belongs to
        self._cache: OrderedDict = OrderedDict()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (TEXT_ENCODER, {"tooltip": "The text encoder from an EasyAnimate loader."}),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "What the video shows: subject, action, scene, camera, style. Long, detailed "
                        "prompts work best.",
                    },
                ),
                "negative_prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": DEFAULT_NEGATIVE_PROMPT,
                        "tooltip": "What to steer away from (used when cfg > 1). The default is the official "
                        "V5.1 one: 'twisted body, limb deformities, text captions, comic, static, ugly, error, "
                        "messy code'.",
                    },
                ),
            }
        }

    def encode(self, text_encoder, prompt: str, negative_prompt: str):
        if self._encoder is None or self._encoder() is not text_encoder.encoder:
            self._encoder, self._cache = weakref.ref(text_encoder.encoder), OrderedDict()
        key = (prompt, negative_prompt)
        embeds = self._cache.get(key)
        if embeds is None:
            device = host.make_room(encoder_vram_bytes, text_encoder.encoder.modules())
            embeds = encode_prompts(text_encoder, prompt, negative_prompt, device, host.offload_device("text_encoder"))
            self._cache[key] = embeds
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return (embeds,)


NODE_CLASS_MAPPINGS = {"EasyAnimatePromptEncode": EasyAnimatePromptEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"EasyAnimatePromptEncode": "EasyAnimate Text Encode"}
