"""Whole EasyAnimate checkpoints: find the parts of a folder, load them, and check they belong together.

Layouts (detected from files, never from the folder's name):
- original EasyAnimate folders: ``transformer/ vae/ text_encoder/ tokenizer/ [text_encoder_2/ tokenizer_2/]
  scheduler/`` (V5.1: Qwen2-VL; V5: Bert + T5);
- diffusers folders: the same sub-folders plus ``model_index.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .configs import TransformerConfig
from .handles import vae_dtype_for
from .loading import LoadReport, load_transformer, load_vae, read_json, weight_files
from .pipeline import Models
from .schedulers import read_scheduler_config

log = logging.getLogger("EasyAnimate")

EXPECTED_LAYOUT = (
    "expected an EasyAnimate checkpoint folder: transformer/ (config.json + *.safetensors), vae/, "
    "text_encoder/ + tokenizer/ (Qwen2-VL for V5.1, Bert for V5), text_encoder_2/ + tokenizer_2/ (T5, V5 only), "
    "scheduler/ — as downloaded from huggingface.co/alibaba-pai (e.g. EasyAnimateV5.1-12b-zh)"
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What was detected: layout, version (V5/V5.1), variant and the main dimensions."""

    path: str
    layout: str
    version: str
    variant: str
    num_layers: int
    width: int
    text_encoder: str | None

    def summary(self) -> str:
        te = f", text encoder {self.text_encoder}" if self.text_encoder else ""
        return f"EasyAnimate {self.version} {self.variant}: {self.num_layers} layers, width {self.width}{te} ({self.layout} layout)"


# model_index.json transformer classes: diffusers' EasyAnimateTransformer3DModel and the original code's three
TRANSFORMER_CLASSES = {"EasyAnimateTransformer3DModel", "HunyuanTransformer3DModel", "Transformer3DModel"}


def detect_layout(folder: Path) -> str:
    if (folder / "model_index.json").is_file():
        return "diffusers"
    if (folder / "transformer").is_dir():
        return "original"
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise ValueError(f"{folder}: {EXPECTED_LAYOUT}; found {found or 'nothing'}")


def check_compatible(cfg: TransformerConfig, vae=None, text_encoder=None) -> None:
    """Raise a ValueError naming both sides when parts of a checkpoint do not belong together."""
    if vae is not None and vae.latent_channels != cfg.out_channels:
        raise ValueError(
            f"the VAE has {vae.latent_channels} latent channels but the transformer predicts {cfg.out_channels}: "
            "use the VAE that ships with this EasyAnimate checkpoint"
        )
    if text_encoder is None:
        return
    kind = text_encoder.kind
    if cfg.version == "V5.1" and kind != "qwen2vl":
        raise ValueError(
            f"the transformer is EasyAnimate V5.1 (one text projection) but the text encoder is {kind} (V5); "
            "V5.1 needs its Qwen2-VL text encoder"
        )
    if cfg.version == "V5" and kind != "bert_t5":
        raise ValueError(
            f"the transformer is EasyAnimate V5 (Bert + T5 projections) but the text encoder is {kind} (V5.1); "
            "V5 needs its Bert + T5 text encoders"
        )
    if text_encoder.hidden_size != cfg.text_embed_dim:
        raise ValueError(
            f"the text encoder's width {text_encoder.hidden_size} does not match the transformer's text projection "
            f"({cfg.text_embed_dim}): the text encoder belongs to another model size"
        )
    if cfg.text_embed_dim_t5 is not None and text_encoder.hidden_size_2 != cfg.text_embed_dim_t5:
        raise ValueError(
            f"the T5 text encoder's width {text_encoder.hidden_size_2} does not match the transformer's T5 "
            f"projection ({cfg.text_embed_dim_t5})"
        )


def load_checkpoint(
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    weight_dtype: torch.dtype | None = None,
    text_dtype: torch.dtype | None = None,
    vae_dtype: torch.dtype | None = None,
    load_text: bool = True,
    text_weight_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Models, CheckpointInfo, dict[str, LoadReport]]:
    """Load transformer, VAE, text encoder(s) and scheduler config of a checkpoint folder (on the CPU).

    ``weight_dtype`` / ``text_weight_dtype`` (float8_e4m3fn) store the transformer's block weights / the text
    encoder's linear weights in fp8. ``progress(done, total)`` counts the transformer's weight files, then the
    VAE and the text encoder (a host's bar, which may raise on Cancel: nothing is kept then). ``vae_dtype``
    defaults to ``dtype``, except float32 for float16 (the official fp16 recipe's ``upcast_vae``, as the nodes)."""
    from .text_loading import load_text_encoder

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"checkpoint folder not found: {folder}; {EXPECTED_LAYOUT}")
    if detect_layout(folder) == "diffusers":  # a model_index.json (the original repositories ship one too)
        index = read_json(folder / "model_index.json")
        cls = (index.get("transformer") or [None, None])[1]
        if cls is not None and cls not in TRANSFORMER_CLASSES:
            raise ValueError(f"{folder}/model_index.json describes a {cls}, not an EasyAnimate transformer")
    for part in ("transformer", "vae"):
        if not (folder / part).is_dir():
            raise ValueError(f"{folder} has no {part}/ folder; {EXPECTED_LAYOUT}")
    shards = len(weight_files(folder / "transformer"))
    total = shards + 1 + int(load_text)

    def step(done: int) -> None:
        if progress is not None:
            progress(done, total)

    transformer, t_report = load_transformer(
        folder / "transformer", dtype=dtype, weight_dtype=weight_dtype, progress=lambda done, _: step(done)
    )
    vae, v_report = load_vae(folder / "vae", dtype=vae_dtype or vae_dtype_for(dtype))
    step(shards + 1)
    cfg = transformer.config
    text_encoder = None
    if load_text:
        text_encoder = load_text_encoder(folder, dtype=text_dtype or dtype, weight_dtype=text_weight_dtype)
        step(total)
    check_compatible(cfg, vae, text_encoder)
    models = Models(transformer, vae, text_encoder, read_scheduler_config(folder / "scheduler"))
    info = CheckpointInfo(
        path=str(folder),
        layout=t_report.layout,  # read from the transformer's own keys: a folder's model_index.json can't tell
        version=cfg.version,
        variant=cfg.variant.value,
        num_layers=cfg.num_layers,
        width=cfg.inner_dim,
        text_encoder=None if text_encoder is None else text_encoder.kind,
    )
    log.info("%s", info.summary())
    return models, info, {"transformer": t_report, "vae": v_report}
