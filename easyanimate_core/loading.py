"""Load EasyAnimate checkpoints: original folders, diffusers folders, sharded and single files.

Everything is detected from files and weights, never from folder names. Models are built on the meta
device and the loaded tensors assigned to them, so weights are never allocated twice. Pickled files are
read only through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .configs import CAMERA_CHANNELS, TransformerConfig, check_supported_version
from .keys import is_diffusers_transformer, transformer_to_ours
from .memory import FP8, is_fp8_weight
from .transformer import EasyAnimateTransformer
from .vae import MagvitVAE, convert_vae_state_dict

log = logging.getLogger("EasyAnimate")

WEIGHT_SUFFIXES = (".safetensors", ".sft", ".bin", ".pt", ".pth", ".ckpt")

# What a V5.1 config says about the pipeline flags that the weights cannot show.
V51_FLAGS = {
    "resize_inpaint_mask_directly": True,
    "enable_text_attention_mask": True,
    "add_noise_in_inpaint_model": True,
}


@dataclass
class LoadReport:
    """What a load found: the files read, keys that were missing or unexpected, the detected layout."""

    files: list[str] = field(default_factory=list)
    layout: str = ""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    # pread(2) reads each tensor into memory of its own, so a tensor that is cast on load (fp32 -> bf16) is freed
    # right after its cast. With the default mmap backend every tensor keeps the whole file mapped, and the pages
    # of tensors already cast stay resident: loading an fp32 file in bf16 peaked at 1.5x the file size.
    try:
        return load_file(str(path), backend="pread")
    except TypeError:  # safetensors < 0.8 has no backend choice
        return load_file(str(path))


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file whatever its suffix: an 8-byte header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _unpickling_reason(e: Exception) -> str:
    """The one useful line of torch's weights-only refusal ("Unsupported global: GLOBAL posix.system ...")."""
    msg = str(e)
    if "WeightsUnpickler error:" in msg:
        msg = msg.rpartition("WeightsUnpickler error:")[2]
    else:
        skip = ("Weights only load failed", "Check the documentation")
        msg = "\n\n".join(p for p in msg.split("\n\n") if not p.strip().startswith(skip))
    first = next((line.strip() for line in msg.splitlines() if line.strip()), "")
    return first.split(". Please use")[0] or "not a tensor pickle"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of one weights file; a truncated or corrupt file is an error naming it.

    Pickled files (.pt, .bin, .ckpt) are read with ``torch.load(weights_only=True)``: a pickle holding anything
    but tensors and plain containers is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix in (".safetensors", ".sft") or _looks_like_safetensors(path):
            return _load_safetensors(path)
        # mmap needs torch's zip format; older (legacy) pickles are read into memory.
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refused to load {path}: torch.load(weights_only=True) found something other than tensors in it, "
            f"or it is not a checkpoint ({_unpickling_reason(e)}). Pickled objects are never executed; convert "
            "the file to .safetensors if you trust its source"
        ) from e
    except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise ValueError(f"cannot read weights file {path}: it is truncated, corrupt or not a checkpoint ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors")
    return sd


def read_json(path: str | Path) -> dict:
    """A JSON object from a user's file (config.json, a shard index); a broken file is a ValueError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ValueError(f"{path} is not valid JSON ({reason}): re-download it") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object: re-download it")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The weights of a model folder: the shards of an index json, or the single weights file."""
    for index in sorted(folder.glob("*.index.json")):
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no 'weight_map' of shard files: re-download it")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ValueError(f"{index} lists shards that are missing: {', '.join(absent)}")
        return files
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no weights in {folder} (expected diffusion_pytorch_model.safetensors or a sharded index)")
    safetensors = [f for f in files if f.suffix in (".safetensors", ".sft")]
    return safetensors[:1] if safetensors else files[:1]


def read_folder_weights(
    folder: Path, report: LoadReport, progress: Callable[[int, int], None] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of every weights file of ``folder``; ``progress(done, total)`` after each file (shard)."""
    sd: dict[str, torch.Tensor] = {}
    files = weight_files(folder)
    for done, f in enumerate(files, start=1):
        sd.update(read_state_dict(f))
        report.files.append(str(f))
        if progress is not None:
            progress(done, len(files))
    return sd


def _block_indices(keys, pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in keys if (m := rx.match(k))}


def _has_ref_latents(in_channels: int, out_channels: int) -> bool:
    """V5.1 Control (3C: latents, control, ref) and Control-Camera (2C + 6: latents, Plücker rays, ref) take
    ref-image latents; V5 Control (2C) does not."""
    return in_channels in (3 * out_channels, 2 * out_channels + CAMERA_CHANNELS)


def infer_transformer_config(sd: dict[str, torch.Tensor]) -> dict:
    """A transformer config.json recovered from weight shapes (for single files that come without one)."""
    keys = list(sd)
    dim, in_channels, p, _ = sd["proj.weight"].shape
    head_dim = sd["transformer_blocks.0.attn1.norm_q.weight"].shape[0]
    add_norm = "text_proj.0.weight" in sd
    text_w = sd["text_proj.1.weight" if add_norm else "text_proj.weight"]
    t5 = sd.get("text_proj_t5.1.weight" if add_norm else "text_proj_t5.weight")
    layers = _block_indices(keys, r"transformer_blocks\.(\d+)\.")
    mmdit = _block_indices(keys, r"transformer_blocks\.(\d+)\.attn2\.")
    out_channels = sd["proj_out.weight"].shape[0] // (p * p)
    cfg = {
        "num_attention_heads": dim // head_dim,
        "attention_head_dim": head_dim,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "patch_size": p,
        "time_embed_dim": sd["time_embedding.linear_1.weight"].shape[0],
        "num_layers": max(layers) + 1,
        "mmdit_layers": (max(mmdit) + 1) if mmdit else 0,
        "add_norm_text_encoder": add_norm,
        "text_embed_dim": text_w.shape[1],
        "text_embed_dim_t5": None if t5 is None else t5.shape[1],
        "after_norm": "transformer_blocks.0.norm3.weight" in sd,
        "add_ref_latent_in_control_model": _has_ref_latents(in_channels, out_channels),
    }
    if t5 is None:  # V5.1 defaults for flags the weights cannot show
        cfg.update(V51_FLAGS)
    return cfg


def _assign(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, report: LoadReport) -> None:
    try:
        result = model.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:  # size mismatches: the weights belong to another size or variant than the config
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        shown = "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")
        hint = (
            "; a single VAE file takes its config from <name>.json beside it (else the V5.x VAE's)"
            if what == "VAE"
            else ""
        )
        raise ValueError(
            f"the {what} weights in {', '.join(report.files)} do not fit its config ({shown or str(e).strip()}): "
            f"a config.json from another model size, or a single file whose config cannot be inferred{hint}"
        ) from e
    report.missing, report.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    # Block weights by the name of a weight our blocks have (extras such as a stray lora_A are only warned about):
    # the config builds fewer blocks than the weights hold, or single-stream ones where they are dual-stream.
    names = {k.split(".", 2)[2] for k in model.state_dict() if k.startswith("transformer_blocks.")}
    blocks = sorted(k for k in report.unexpected if k.startswith("transformer_blocks.") and k.split(".", 2)[2] in names)
    if blocks:
        depth = {int(k.split(".")[1]) for k in blocks}
        raise ValueError(
            f"the {what} weights in {', '.join(report.files)} hold block weights its config does not build "
            f"({len(blocks)} keys in blocks {min(depth)}-{max(depth)}, e.g. {blocks[0]}): the config.json "
            "(num_layers, mmdit_layers) is from another model than the weights; use the config that came with them"
        )
    if report.unexpected:
        log.warning(
            "%s: %d unexpected keys ignored: %s", what, len(report.unexpected), ", ".join(report.unexpected[:10])
        )
    if report.missing:
        raise ValueError(
            f"{what} is missing {len(report.missing)} weights ({', '.join(report.missing[:8])}...) in "
            f"{', '.join(report.files)}: the file is incomplete or made for another architecture"
        )


def _cast(sd: dict[str, torch.Tensor], dtype: torch.dtype, weight_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Compute-dtype tensors, except 2-D block weights stored as ``weight_dtype`` (fp8) when given.

    Norms, embeddings, biases, the patch embedding and the output head stay in the compute dtype.
    """
    out = {}
    for k in list(sd):  # pop as we go so that original and cast tensors do not all coexist
        v = sd.pop(k)
        target = weight_dtype if weight_dtype is not None and is_fp8_weight(k, v) else dtype
        if v.dtype == FP8 and target != FP8:
            v = v.to(torch.float32)  # fp8 -> compute goes through float32 for exact rounding
        out[k] = v if v.dtype == target else v.to(target)
    return out


def load_transformer(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    weight_dtype: torch.dtype | None = None,
    config: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EasyAnimateTransformer, LoadReport]:
    """Load a transformer from a folder (config.json + weights, sharded or not) or a single weights file.

    ``dtype`` is the compute dtype; ``weight_dtype=torch.float8_e4m3fn`` stores block weights in fp8.
    A file already stored in fp8 keeps fp8 block weights unless ``weight_dtype`` says otherwise.
    ``progress(done, total)`` follows the weight files read (a host's bar, which may raise on Cancel).
    """
    path = Path(path)
    report = LoadReport()
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ValueError(f"{path} has no config.json; expected a transformer folder (config.json + safetensors)")
        config = config or read_json(cfg_file)  # before the weights: a broken or older-version config fails fast
        check_supported_version(config, str(cfg_file))
        raw = read_folder_weights(path, report, progress)
    else:
        raw = read_state_dict(path)
        report.files.append(str(path))
        if progress is not None:
            progress(1, 1)
    report.layout = "diffusers" if is_diffusers_transformer(raw) else "original"
    sd = transformer_to_ours(raw)
    del raw
    if "proj.weight" not in sd:
        older = " (its 'pos_embed.proj.weight' is how EasyAnimate V1-V4 name it: those versions are not supported)"
        raise ValueError(
            f"{report.files[0]} is not an EasyAnimate V5/V5.1 transformer (no patch embedding 'proj.weight')"
            + (older if "pos_embed.proj.weight" in sd else "")
        )
    if weight_dtype is None and any(v.dtype == FP8 for v in sd.values()):
        weight_dtype = FP8
    config = config or infer_transformer_config(sd)
    if "add_ref_latent_in_control_model" not in config:  # diffusers configs do not carry it
        out_channels = config.get("out_channels") or 16
        ref = _has_ref_latents(config.get("in_channels") or out_channels, out_channels)
        config = {**config, "add_ref_latent_in_control_model": ref}
    cfg = TransformerConfig.from_dict(config)
    sd = _cast(sd, dtype, weight_dtype)
    with torch.device("meta"):
        model = EasyAnimateTransformer(cfg)
    _assign(model, sd, "transformer", report)
    log.info(
        "transformer: %s %s, %d layers, width %d (%s layout)",
        cfg.version,
        cfg.variant.value,
        cfg.num_layers,
        cfg.inner_dim,
        report.layout,
    )
    return model.eval().requires_grad_(False), report


def load_vae(
    path: str | Path, *, dtype: torch.dtype = torch.float32, config: dict | None = None
) -> tuple[MagvitVAE, LoadReport]:
    """Load the MagViT VAE from a ``vae/`` folder or a single file (a single file uses ``<name>.json`` beside it
    when there is one, else the V5.x config)."""
    path = Path(path)
    report = LoadReport()
    if path.is_dir():
        cfg_file = path / "config.json"
        if config is None and not cfg_file.is_file():
            raise ValueError(f"{path} has no config.json; expected a VAE folder (config.json + safetensors)")
        config = config or read_json(cfg_file)
        sd = read_folder_weights(path, report)
    else:
        sd = read_state_dict(path)
        report.files.append(str(path))
        sidecar = path.with_suffix(".json")  # <name>.json beside <name>.safetensors overrides the V5.x config
        config = config or (read_json(sidecar) if sidecar.is_file() else {})
    sd = _cast(convert_vae_state_dict(sd), dtype, None)
    if config.get("latent_channels") is None and "quant_conv.weight" in sd:
        config = {**config, "latent_channels": sd["quant_conv.weight"].shape[0] // 2}
    with torch.device("meta"):
        model = MagvitVAE.from_config(config)
    _assign(model, sd, "VAE", report)
    return model.eval().requires_grad_(False), report
