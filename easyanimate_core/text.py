"""Text encoders of EasyAnimate: Qwen2-VL (V5.1) and Bert + T5 (V5).

The rules reproduce the reference pipelines exactly:

* V5.1 (diffusers ``EasyAnimatePipeline.encode_prompt``; the original EasyAnimate pipeline agrees for one
  prompt): each prompt becomes one user message ``[{"type": "text", "text": prompt}]`` rendered with the
  tokenizer's chat template (``add_generation_prompt=True``; the template adds the default system prompt), then
  tokenized with right padding to ``max_sequence_length`` (256) and truncation. The model runs with the
  attention mask and ``output_hidden_states=True``; the embedding is ``hidden_states[-2]`` (output of the
  second-to-last decoder layer, before the final norm). The mask is the tokenizer's attention mask.
* V5 (original ``easyanimate/pipeline/pipeline_easyanimate.py``, ``enable_multi_text_encoder: true``): Bert
  (``text_encoder/``) and T5 (``text_encoder_2/``) each tokenize the raw prompt with their special tokens,
  ``padding="max_length"``, truncation, ``max_length = min(tokenizer.model_max_length, 256)`` (77 for the
  HunyuanDiT Bert, 256 for the mT5). The V5 config sets ``enable_text_attention_mask: false``, so both encoders
  run WITHOUT the attention mask and the embedding is ``last_hidden_state``; the masks are still returned.

Negative prompts follow the same path as positive ones (the references pad them to the same length); an absent
negative prompt is the empty string ``""``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

logger = logging.getLogger("EasyAnimate")

__all__ = [
    "QWEN2VL_CHAT_TEMPLATE",
    "TextEmbeds",
    "TextEncoder",
]  # loading: text_loading.load_text_encoder

TextEncoderKind = Literal["qwen2vl", "bert_t5"]

# Default lengths of the reference pipelines (diffusers `max_sequence_length=256`; the original's
# `actual_max_sequence_length=256`, which also caps Bert and T5 below their tokenizers' own limits).
QWEN2VL_MAX_SEQUENCE_LENGTH = 256
V5_MAX_SEQUENCE_LENGTH = 256

# Qwen2-VL-Instruct's chat template; used only when a tokenizer folder ships without one.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TextEmbeds:
    """Encoded prompts. Immutable; compute once, reuse for any number of runs.

    embeds:   [B, L, D]   Qwen2-VL (V5.1) or Bert (V5) hidden states
    mask:     [B, L]      1 for real tokens, 0 for padding (long)
    embeds_2: [B, L2, D2] T5 hidden states (V5 only, else None)
    mask_2:   [B, L2]     T5 mask (V5 only, else None)
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    embeds_2: torch.Tensor | None = None
    mask_2: torch.Tensor | None = None

    def __post_init__(self) -> None:
        pairs = [("", self.embeds, self.mask)]
        if (self.embeds_2 is None) != (self.mask_2 is None):
            raise ValueError("TextEmbeds: embeds_2 and mask_2 must be given together")
        if self.embeds_2 is not None:
            pairs.append(("_2", self.embeds_2, self.mask_2))
        for suffix, embeds, mask in pairs:
            if embeds.ndim != 3 or mask.ndim != 2 or tuple(mask.shape) != tuple(embeds.shape[:2]):
                raise ValueError(
                    f"TextEmbeds: embeds{suffix} must be [B, L, D] and mask{suffix} [B, L]; "
                    f"got {tuple(embeds.shape)} and {tuple(mask.shape)}"
                )
        if self.embeds_2 is not None and self.embeds_2.shape[0] != self.embeds.shape[0]:
            raise ValueError("TextEmbeds: embeds and embeds_2 have different batch sizes")

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextEmbeds:
        """Move to `device`; cast the embeddings (never the masks) to `dtype`."""

        def move(x: torch.Tensor | None, cast: bool) -> torch.Tensor | None:
            if x is None:
                return None
            return x.to(device=device, dtype=dtype if cast else None)

        return TextEmbeds(
            move(self.embeds, True), move(self.mask, False), move(self.embeds_2, True), move(self.mask_2, False)
        )

    def repeat(self, n: int) -> TextEmbeds:
        """Each prompt `n` times in a row ([B, ...] -> [B * n, ...]), for several videos per prompt."""
        if n == 1:
            return self

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat_interleave(n, dim=0)

        return TextEmbeds(rep(self.embeds), rep(self.mask), rep(self.embeds_2), rep(self.mask_2))

    @staticmethod
    def cat(items: Sequence[TextEmbeds]) -> TextEmbeds:
        """Concatenate along the batch, e.g. ``TextEmbeds.cat([negative, positive])`` for classifier-free guidance."""
        if not items:
            raise ValueError("TextEmbeds.cat: nothing to concatenate")
        if len({it.embeds_2 is None for it in items}) != 1:
            raise ValueError("TextEmbeds.cat: cannot mix V5 (with T5) and V5.1 embeddings")

        def cat(xs: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if xs[0] is None else torch.cat(xs, dim=0)

        return TextEmbeds(
            cat([it.embeds for it in items]),
            cat([it.mask for it in items]),
            cat([it.embeds_2 for it in items]),
            cat([it.mask_2 for it in items]),
        )


class TextEncoder:
    """Loaded text encoder(s) and tokenizer(s). Holds no state between calls besides the models.

    kind "qwen2vl" (V5.1): `model` is a ``Qwen2VLForConditionalGeneration`` (vision tower removed), `tokenizer` a
    ``Qwen2Tokenizer`` with its chat template. kind "bert_t5" (V5): `model`/`tokenizer` are Bert,
    `model_2`/`tokenizer_2` are T5.
    """

    def __init__(self, kind: TextEncoderKind, model, tokenizer, model_2=None, tokenizer_2=None):
        if kind not in ("qwen2vl", "bert_t5"):
            raise ValueError(f"unknown text encoder kind {kind!r}")
        if (kind == "bert_t5") != (model_2 is not None and tokenizer_2 is not None):
            raise ValueError("kind 'bert_t5' needs model_2 and tokenizer_2; 'qwen2vl' takes neither")
        self.kind: TextEncoderKind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.model_2 = model_2
        self.tokenizer_2 = tokenizer_2

    @property
    def hidden_size(self) -> int:
        """D of `TextEmbeds.embeds` (3584 for Qwen2-VL-7B, 1024 for V5's Bert)."""
        config = self.model.config
        return getattr(config, "text_config", config).hidden_size

    @property
    def hidden_size_2(self) -> int | None:
        """D2 of `TextEmbeds.embeds_2` (T5's d_model, 2048 for mT5-XL), None for V5.1."""
        return None if self.model_2 is None else self.model_2.config.d_model

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules, for placement policies (offload) that move them between devices."""
        return [m for m in (self.model, self.model_2) if m is not None]

    def encode(
        self,
        prompts: str | Sequence[str],
        *,
        device: torch.device | str | None = None,
        max_sequence_length: int | None = None,
    ) -> TextEmbeds:
        """Encode positive or negative prompts (any language) into `TextEmbeds` on `device`.

        The models run where they are; the embeddings come back in the model dtype. `max_sequence_length`
        defaults to the reference pipelines' lengths (256 for Qwen2-VL; min(tokenizer limit, 256) for Bert and T5,
        i.e. 77 and 256 for V5); for V5 a given value applies to both encoders and may not exceed 256.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("encode: prompts must be a non-empty list of strings (use '' for an empty prompt)")
        if max_sequence_length is not None and max_sequence_length < 1:
            raise ValueError(f"encode: max_sequence_length must be positive, got {max_sequence_length}")
        with torch.no_grad():
            if self.kind == "qwen2vl":
                length = max_sequence_length or QWEN2VL_MAX_SEQUENCE_LENGTH
                embeds, mask = self._encode_qwen2vl(prompts, length)
                out = TextEmbeds(embeds, mask)
            else:
                if max_sequence_length is not None and max_sequence_length > V5_MAX_SEQUENCE_LENGTH:
                    raise ValueError(f"encode: V5 prompts are limited to {V5_MAX_SEQUENCE_LENGTH} tokens")
                embeds, mask = self._encode_plain(self.model, self.tokenizer, prompts, max_sequence_length)
                embeds_2, mask_2 = self._encode_plain(self.model_2, self.tokenizer_2, prompts, max_sequence_length)
                out = TextEmbeds(embeds, mask, embeds_2, mask_2)
        return out.to(device if device is not None else self.device)

    def _encode_qwen2vl(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer, model = self.tokenizer, self.model
        # One conversation per prompt (the original pipeline's list handling merged a batch into one chat).
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for prompt in prompts
        ]
        _warn_if_truncated(tokenizer, texts, max_length)
        inputs = tokenizer(
            text=texts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_attention_mask=True,
            padding_side="right",
            return_tensors="pt",
        ).to(model.device)
        extra = {"logits_to_keep": 1} if _accepts(model.forward, "logits_to_keep") else {}  # skip the vocab head
        outputs = model(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            output_hidden_states=True,
            use_cache=False,
            **extra,
        )
        return outputs.hidden_states[-2], inputs.attention_mask  # [B, L, D], [B, L]

    @staticmethod
    def _encode_plain(
        model, tokenizer, prompts: list[str], max_length: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if max_length is None:
            max_length = min(tokenizer.model_max_length, V5_MAX_SEQUENCE_LENGTH)
        _warn_if_truncated(tokenizer, prompts, max_length)
        inputs = tokenizer(
            prompts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        # V5 runs with `enable_text_attention_mask: false`: the encoder sees the padding unmasked.
        hidden = model(inputs.input_ids.to(model.device))[0]
        return hidden, inputs.attention_mask.to(model.device)  # [B, L, D], [B, L]


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _warn_if_truncated(tokenizer, texts: list[str], max_length: int) -> None:
    lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    if max(lengths) > max_length:
        logger.warning(
            "prompt truncated to %d tokens (%s has %d); the rest is ignored",
            max_length,
            type(tokenizer).__name__,
            max(lengths),
        )


# ----------------------------------------------------------------------------------------------------------------
# loading
