"""Loading EasyAnimate's text encoders from a model folder (original or diffusers layout) or explicit paths.

Qwen2-VL (V5.1) loads without its vision tower; Bert + T5 (V5) as two encoders. ``weight_dtype`` (fp8) stores
every linear layer's weight in fp8, computed in the input's dtype at call time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError

from . import ops
from .loading import read_json
from .text import QWEN2VL_CHAT_TEMPLATE, TextEncoder

logger = logging.getLogger("EasyAnimate")

_EXPECTED_LAYOUT = (
    "expected a model folder (original EasyAnimate or diffusers layout) containing\n"
    "  text_encoder/config.json + weights and tokenizer/            (V5.1: Qwen2-VL)\n"
    "  or additionally text_encoder_2/ and tokenizer_2/             (V5: Bert in text_encoder/, T5 in text_encoder_2/)\n"
    "or a mapping with the keys 'text_encoder', 'tokenizer' (and 'text_encoder_2', 'tokenizer_2' for V5)"
)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"no config.json in {folder}; {_EXPECTED_LAYOUT}")
    return read_json(path)


def _detect(config: dict) -> str:
    """'qwen2vl', 'bert', 't5' or 'unknown' from config.json's model_type / architectures."""
    model_type = str(config.get("model_type", "")).lower()
    archs = [str(a) for a in config.get("architectures") or []]
    if model_type == "qwen2_vl" or "Qwen2VLForConditionalGeneration" in archs:
        return "qwen2vl"
    if model_type == "bert" or any(a.startswith("Bert") for a in archs):
        return "bert"
    if model_type in ("t5", "mt5") or any(a in ("T5EncoderModel", "MT5EncoderModel") for a in archs):
        return "t5"
    return "unknown"


def _resolve_paths(folder_or_paths) -> dict[str, Path]:
    if isinstance(folder_or_paths, Mapping):
        paths = {k: Path(v) for k, v in folder_or_paths.items() if v is not None}
        unknown = set(paths) - {"text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; {_EXPECTED_LAYOUT}")
    elif isinstance(folder_or_paths, (str, os.PathLike)):
        root = Path(folder_or_paths)
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder; {_EXPECTED_LAYOUT}")
        paths = {name: root / name for name in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
        paths = {k: v for k, v in paths.items() if v.is_dir()}
        index = root / "model_index.json"
        if index.is_file():
            logger.debug("%s: diffusers layout (%s)", root, read_json(index).get("_class_name"))
    else:
        raise TypeError(f"load_text_encoder: expected a folder or a mapping of paths, got {type(folder_or_paths)}")
    for key in ("text_encoder", "tokenizer"):
        if key not in paths or not paths[key].is_dir():
            raise ValueError(f"missing {key}/ folder ({paths.get(key, key)}); {_EXPECTED_LAYOUT}")
    return paths


_TOKENIZER_FAMILY = {"qwen2vl": ("qwen", "Qwen2-VL"), "bert": ("bert", "Bert"), "t5": ("t5", "T5")}
# tokenizer.json's "model.type" for each encoder's tokenizer: byte-level BPE, WordPiece, SentencePiece Unigram.
_TOKENIZER_MODEL = {"qwen2vl": "BPE", "bert": "WordPiece", "t5": "Unigram"}


def _check_tokenizer_folder(folder: Path, encoder: str) -> None:
    """A tokenizer folder with files, whose tokenizer_config.json (when it names a class) is for ``encoder``: a
    tokenizer of another model would load and encode, into token ids that mean nothing to the encoder."""
    if not any(folder.iterdir()):
        raise ValueError(f"tokenizer folder {folder} is empty; {_EXPECTED_LAYOUT}")
    config = folder / "tokenizer_config.json"
    named = read_json(config).get("tokenizer_class") if config.is_file() else None
    family, label = _TOKENIZER_FAMILY[encoder]
    if isinstance(named, str) and family not in named.lower():
        raise ValueError(
            f"{folder} holds a {named} but the text encoder is {label}: the tokenizer belongs to another model; "
            "use the tokenizer that came with the text encoder"
        )
    fast = folder / "tokenizer.json"
    kind = read_json(fast).get("model", {}).get("type") if fast.is_file() else None
    if isinstance(kind, str) and kind != _TOKENIZER_MODEL[encoder]:
        raise ValueError(
            f"{folder}/tokenizer.json is a {kind} tokenizer but the text encoder is {label} "
            f"({_TOKENIZER_MODEL[encoder]}): the tokenizer belongs to another model; use the tokenizer that came "
            "with the text encoder"
        )


def _check_vocabulary(tokenizer, model: torch.nn.Module, folder: Path) -> None:
    """Token ids the encoder has no embedding for would fail deep inside the first encode."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(
            f"{folder} has {len(tokenizer)} tokens but the text encoder embeds only {rows}: the tokenizer belongs "
            "to another model; use the tokenizer that came with the text encoder"
        )


def _from_pretrained(cls, folder: Path, dtype: torch.dtype):
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    try:
        model, info = cls.from_pretrained(
            str(folder), local_files_only=True, low_cpu_mem_usage=True, output_loading_info=True, **{dtype_key: dtype}
        )
    except SafetensorError as e:
        raise ValueError(
            f"cannot read {_broken_weights(folder)}: it is truncated or corrupt ({e}); re-download it"
        ) from e
    # transformers fills weights missing from the files with random values and only logs it: refuse instead
    missing = [k for k in info.get("missing_keys", ()) if not _UNUSED.intersection(k.split("."))]
    if missing:
        raise ValueError(
            f"{folder}: {len(missing)} weights that its config.json describes are not in its weight files "
            f"(e.g. {sorted(missing)[0]}): the config and the weights come from different models, or the download "
            "is incomplete; re-download the text encoder"
        )
    return model


# Parts the prompt encoding never runs (Qwen2-VL's vision tower and LM head, Bert's pooler): missing is fine.
_UNUSED = {"visual", "lm_head", "pooler"}


def _broken_weights(folder: Path) -> str:
    """'weights file <path>' for the first .safetensors file of ``folder`` that does not open, else its folder."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError):
            return f"weights file {path}"
    return f"the weights in {folder}"


def load_text_encoder(
    folder_or_paths: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    weight_dtype: torch.dtype | None = None,
) -> TextEncoder:
    """Load EasyAnimate's text encoder(s) from local files only.

    ``weight_dtype=torch.float8_e4m3fn`` stores the weights of every linear layer in fp8 (half the memory of
    bf16), computed in ``dtype``; embeddings and norms stay in ``dtype``.

    `folder_or_paths` is a model folder in the original EasyAnimate or the diffusers layout (both keep
    ``text_encoder/`` + ``tokenizer/``, and V5 adds ``text_encoder_2/`` + ``tokenizer_2/``), or a mapping
    ``{"text_encoder": ..., "tokenizer": ..., ["text_encoder_2": ..., "tokenizer_2": ...]}``. Qwen2-VL (V5.1) or
    Bert + T5 (V5) is detected from ``config.json`` (model_type / architectures), never from folder names.
    Weights are loaded in `dtype` and the models placed on `device`, in eval mode, without gradients.
    """
    from transformers import (
        BertModel,
        BertTokenizer,
        Qwen2Tokenizer,
        Qwen2VLForConditionalGeneration,
        T5EncoderModel,
        T5Tokenizer,
    )

    paths = _resolve_paths(folder_or_paths)
    detected = _detect(_read_config(paths["text_encoder"]))
    if detected in _TOKENIZER_FAMILY:  # else the error below names the unsupported encoder
        _check_tokenizer_folder(paths["tokenizer"], detected)

    if detected == "qwen2vl":
        model = _from_pretrained(Qwen2VLForConditionalGeneration, paths["text_encoder"], dtype)
        _drop_vision_tower(model)
        tokenizer = Qwen2Tokenizer.from_pretrained(str(paths["tokenizer"]), local_files_only=True)
        _check_vocabulary(tokenizer, model, paths["tokenizer"])
        if not getattr(tokenizer, "chat_template", None):
            logger.info("%s has no chat template; using Qwen2-VL's", paths["tokenizer"])
            tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
        encoder = TextEncoder("qwen2vl", model, tokenizer)
    elif detected == "bert":
        for key in ("text_encoder_2", "tokenizer_2"):
            if key not in paths or not paths[key].is_dir():
                raise ValueError(f"Bert text encoder found (V5) but {key}/ is missing; {_EXPECTED_LAYOUT}")
        _check_tokenizer_folder(paths["tokenizer_2"], "t5")
        detected_2 = _detect(_read_config(paths["text_encoder_2"]))
        if detected_2 != "t5":
            raise ValueError(
                f"unsupported text encoder pair: Bert with {detected_2!r} in {paths['text_encoder_2']} "
                "(EasyAnimate V5 uses Bert + T5)"
            )
        # The original loads in float32 and casts everything, including T5's fp32-kept `wo` layers.
        model = _from_pretrained(BertModel, paths["text_encoder"], dtype).to(dtype)
        model_2 = _from_pretrained(T5EncoderModel, paths["text_encoder_2"], dtype).to(dtype)
        tokenizer = BertTokenizer.from_pretrained(str(paths["tokenizer"]), local_files_only=True)
        tokenizer_2 = T5Tokenizer.from_pretrained(str(paths["tokenizer_2"]), local_files_only=True)
        _check_vocabulary(tokenizer, model, paths["tokenizer"])
        _check_vocabulary(tokenizer_2, model_2, paths["tokenizer_2"])
        encoder = TextEncoder("bert_t5", model, tokenizer, model_2, tokenizer_2)
    else:
        raise ValueError(
            f"{paths['text_encoder']}/config.json is neither Qwen2-VL (V5.1) nor Bert (V5); {_EXPECTED_LAYOUT}"
        )

    for module in encoder.modules():
        module.eval().requires_grad_(False).to(device)
        if weight_dtype is not None:
            store_linear_weights(module, weight_dtype)
    return encoder


def store_linear_weights(model: torch.nn.Module, weight_dtype: torch.dtype) -> int:
    """Store every ``nn.Linear`` weight of ``model`` as ``weight_dtype``, computed in the input's dtype at call time
    (the layer becomes an ``ops.Linear``, which casts its parameters per call). Returns the number of layers."""
    count = 0
    for name, module in model.named_modules():
        # T5 casts its feed-forward input to the dtype of `wo`'s weight (kept in float32 upstream): leave `wo` as is
        if type(module) is torch.nn.Linear and not name.endswith(".wo"):
            module.__class__ = ops.Linear  # same parameters and attributes, a forward that casts the weight
            module.weight.data = module.weight.data.to(weight_dtype)
            count += 1
    return count


def _drop_vision_tower(model: torch.nn.Module) -> None:
    """Remove Qwen2-VL's vision tower (prompts are text only), as the original EasyAnimate does."""
    for owner in (model, getattr(model, "model", None)):
        if isinstance(owner, torch.nn.Module) and "visual" in owner._modules:
            del owner._modules["visual"]
