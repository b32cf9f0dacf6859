"""Bytes of the Qwen2-VL-7B text encoder (V5.1) as stored in bf16 and with ``--text-encoder-fp8``.

Builds the full-size model on the meta device from Qwen2-VL-7B-Instruct's published architecture numbers
(no weights, no memory), drops the vision tower as the loader does, applies the loader's own fp8 conversion
(``text_loading.store_linear_weights``) and sums the parameter bytes:

    python benchmarks/text_encoder_bytes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easyanimate_core.text_loading import _drop_vision_tower, store_linear_weights  # noqa: E402

QWEN2VL_7B = dict(  # Qwen/Qwen2-VL-7B-Instruct config.json (text part)
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    tie_word_embeddings=False,
)


def build():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(**QWEN2VL_7B, text_config=QWEN2VL_7B)
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)
    _drop_vision_tower(model)
    return model


def readable_size(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30


def main() -> None:
    model = build()
    params = sum(p.numel() for p in model.parameters())
    before = readable_size(model)
    layers = store_linear_weights(model, torch.float8_e4m3fn)
    after = readable_size(model)
    print(f"Qwen2-VL-7B text encoder: {params / 1e9:.2f} B parameters")
    print(f"bf16: {before:.2f} GiB; fp8 linear weights ({layers} layers): {after:.2f} GiB ({after / before:.0%})")


if __name__ == "__main__":
    main()
