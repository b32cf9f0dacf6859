"""Deterministic tiny EasyAnimate checkpoints in the real on-disk layouts (tests and the demo's default).

``write_tiny_checkpoint(folder, version="V5.1", variant="InP", layout="original")`` writes a complete
checkpoint folder of a few MB that the real loaders read. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..configs import Variant
from .text import write_tiny_bert_t5, write_tiny_qwen2vl
from .transformer import check_version_variant, tiny_transformer_config, write_single_file, write_tiny_transformer
from .vae import write_tiny_vae

__all__ = [
    "write_tiny_checkpoint",
    "write_single_file",
    "tiny_transformer_config",
    "check_version_variant",
    "TINY_SCHEDULERS",
]

TINY_SCHEDULERS = {
    # V5.1 is a flow-matching model.
    "V5.1": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0},
    # V5 is a DDPM-family model; these are diffusers' DDIM defaults (a test fixture, not the published values).
    "V5": {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "clip_sample": False,
        "prediction_type": "epsilon",
    },
}


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _text_width(folder: Path, sub: str) -> int:
    cfg = json.loads((folder / sub / "config.json").read_text(encoding="utf-8"))
    text_cfg = cfg.get("text_config") or {}
    return cfg.get("hidden_size") or cfg.get("d_model") or text_cfg["hidden_size"]


def write_tiny_checkpoint(
    folder: str | Path,
    *,
    version: str = "V5.1",
    variant: Variant | str = Variant.T2V,
    layout: str = "original",
    shards: int = 1,
    seed: int = 0,
) -> Path:
    """Write a complete tiny checkpoint of ``version``/``variant`` in the ``original`` or ``diffusers`` layout."""
    folder = Path(folder)
    variant = Variant(variant)
    check_version_variant(version, variant)  # before anything is written: no half-written folder
    if version == "V5.1":
        write_tiny_qwen2vl(folder)
        text_dim, text_dim_t5 = _text_width(folder, "text_encoder"), None
    elif version == "V5":
        write_tiny_bert_t5(folder)
        text_dim, text_dim_t5 = _text_width(folder, "text_encoder"), _text_width(folder, "text_encoder_2")
    else:
        raise ValueError(f"version must be 'V5' or 'V5.1', got {version!r}")
    config = tiny_transformer_config(variant, version, text_dim, text_dim_t5)
    write_tiny_transformer(folder / "transformer", config, layout=layout, seed=seed, shards=shards)
    write_tiny_vae(folder / "vae", layout=layout, seed=seed)
    _write_json(folder / "scheduler" / "scheduler_config.json", TINY_SCHEDULERS[version])
    if layout == "diffusers":
        text = (
            {
                "text_encoder": ["transformers", "Qwen2VLForConditionalGeneration"],
                "tokenizer": ["transformers", "Qwen2Tokenizer"],
            }
            if version == "V5.1"
            else {
                "text_encoder": ["transformers", "BertModel"],
                "tokenizer": ["transformers", "BertTokenizer"],
                "text_encoder_2": ["transformers", "T5EncoderModel"],
                "tokenizer_2": ["transformers", "T5Tokenizer"],
            }
        )
        pipe = {Variant.INP: "EasyAnimateInpaintPipeline", Variant.T2V: "EasyAnimatePipeline"}.get(
            variant, "EasyAnimateControlPipeline"
        )
        _write_json(
            folder / "model_index.json",
            {
                "_class_name": pipe,
                "_diffusers_version": "0.32.2",
                "scheduler": ["diffusers", TINY_SCHEDULERS[version]["_class_name"]],
                "transformer": ["diffusers", "EasyAnimateTransformer3DModel"],
                "vae": ["diffusers", "AutoencoderKLMagvit"],
                **text,
            },
        )
    return folder
