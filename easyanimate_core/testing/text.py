"""Tiny, deterministic, working text encoders in the real EasyAnimate on-disk layouts.

``write_tiny_qwen2vl(folder)`` writes ``text_encoder/`` + ``tokenizer/`` like EasyAnimate V5.1 (Qwen2-VL);
``write_tiny_bert_t5(folder)`` writes ``text_encoder/`` + ``tokenizer/`` (Bert) and ``text_encoder_2/`` +
``tokenizer_2/`` (T5) like EasyAnimate V5. Weights are random but seeded per tensor name, configs are fixed
json, and tokenizers are built locally, so two writes produce the same bytes and nothing downloads.

Model configs are written in the flat form the published checkpoints use (e.g. Qwen2-VL's legacy
``config.json`` with ``vision_config`` nested and text fields at top level) and weights with the
published key names (``model.layers.*``, ``visual.*``), so the loaders see what they see in the wild.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..text import QWEN2VL_CHAT_TEMPLATE

__all__ = [
    "TINY_BERT_HIDDEN",
    "TINY_QWEN2VL_HIDDEN",
    "TINY_T5_HIDDEN",
    "write_tiny_bert_t5",
    "write_tiny_qwen2vl",
]

TINY_QWEN2VL_HIDDEN = 32
TINY_BERT_HIDDEN = 32
TINY_T5_HIDDEN = 24

# A small fixed bilingual corpus: it shapes the BPE merges and the WordPiece/Unigram vocabularies.
_CORPUS = [
    "A brown dog is shaking its head, sitting on a light-coloured sofa in a comfortable room.",
    "The video is of high quality, and the view is very clear. High quality, masterpiece, best quality.",
    "Twisted body, limb deformities, text captions, comic, static, ugly, error, messy code.",
    "A cat walks on the grass, realistic style, the camera moves slowly to the left.",
    "一只棕褐色的狗正摇晃着脑袋，坐在一个舒适的房间里的浅色沙发上。",
    "扭曲的身体，肢体残缺，文本字幕，漫画，静止，丑陋，错误，乱码。",
    "视频质量很高，画面非常清晰。一只猫在草地上走，镜头慢慢向左移动。",
]

# Qwen2's pre-tokenisation split (the same pattern its tokenizer.json carries).
_QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Qwen2-VL's special tokens, in the order (and hence relative ids) of the real tokenizer (151643...).
_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


# ----------------------------------------------------------------------------------------------------------------
# shared helpers


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _seeded_tensor(name: str, like: torch.Tensor) -> torch.Tensor:
    """A random tensor for one weight, seeded by its name only (independent of init order and library version)."""
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
    x = torch.randn(like.shape, generator=gen, dtype=torch.float32)
    if like.ndim == 1:
        # norms and biases: norm weights around 1, biases small
        return (1.0 + 0.1 * x) if ("norm" in name or "ln" in name or name.endswith("layer_norm.weight")) else 0.02 * x
    if "embed" in name or name.endswith("shared.weight") or "relative_attention_bias" in name:
        return x
    fan_in = like[0].numel()
    return x / math.sqrt(fan_in)


def _save_weights(model: torch.nn.Module, folder: Path, rename=lambda k: k, skip: tuple[str, ...] = ()) -> None:
    state = {}
    for key, value in sorted(model.state_dict().items()):
        if key in skip or not value.is_floating_point():
            continue
        state[rename(key)] = _seeded_tensor(rename(key), value).contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _build(model_cls, config):
    # Build on CPU under a fixed seed; the values are overwritten by `_seeded_tensor` anyway.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_cls(config)


# ----------------------------------------------------------------------------------------------------------------
# Qwen2-VL (EasyAnimate V5.1)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _byte_level_bpe(num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn `num_merges` byte-level BPE merges on the fixed corpus (ties broken lexicographically)."""
    from tokenizers import Regex, pre_tokenizers

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    words: Counter[tuple[str, ...]] = Counter()
    for line in _CORPUS:
        for piece, _ in pre.pre_tokenize_str(line):
            words[tuple(piece)] += 1

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: i for i, b in enumerate(sorted(byte_chars))}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        merged: Counter[tuple[str, ...]] = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, merges


def _tiny_qwen_tokenizer():
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_bpe(num_merges=120)
    for token in _QWEN_SPECIAL:  # fixed ids right after the BPE vocabulary, in the real order
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in _QWEN_SPECIAL], special_tokens=True)
    return tok


def write_tiny_qwen2vl(folder: str | Path) -> Path:
    """Write ``text_encoder/`` (Qwen2VLForConditionalGeneration) and ``tokenizer/`` (Qwen2Tokenizer) under `folder`.

    Text model: hidden 32, 2 layers, 4 heads (2 KV heads), head dim 8, MRoPE sections [2, 1, 1]; vision tower:
    depth 1, width 16. Returns `folder`.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder = Path(folder)
    tok_dir, enc_dir = folder / "tokenizer", folder / "text_encoder"
    tok_dir.mkdir(parents=True, exist_ok=True)
    enc_dir.mkdir(parents=True, exist_ok=True)

    tok = _tiny_qwen_tokenizer()
    tok.save_pretrained(str(tok_dir))
    special = {t: tok.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    vocab_size = 8 * math.ceil(len(tok) / 8)

    # Flat legacy layout, as in Qwen2-VL-7B-Instruct's config.json.
    config = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": special["<|endoftext|>"],
        "eos_token_id": special["<|im_end|>"],
        "vision_start_token_id": special["<|vision_start|>"],
        "vision_end_token_id": special["<|vision_end|>"],
        "vision_token_id": special["<|vision_pad|>"],
        "image_token_id": special["<|image_pad|>"],
        "video_token_id": special["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": TINY_QWEN2VL_HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 1024,
        "max_window_layers": 2,
        "model_type": "qwen2_vl",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 1024,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 1,
            "embed_dim": 16,
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_chans": 3,
            "hidden_size": TINY_QWEN2VL_HIDDEN,
            "patch_size": 2,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
        "vocab_size": vocab_size,
    }
    _write_json(enc_dir / "config.json", config)
    model = _build(Qwen2VLForConditionalGeneration, Qwen2VLConfig(**config))

    def legacy_key(key: str) -> str:  # transformers>=5 module names -> published checkpoint names
        if key.startswith("model.language_model."):
            return "model." + key[len("model.language_model.") :]
        if key.startswith("model.visual."):
            return key[len("model.") :]
        return key

    _save_weights(model, enc_dir, rename=legacy_key)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Bert + T5 (EasyAnimate V5)


def _corpus_chars() -> list[str]:
    """Every non-space character of the corpus plus printable ASCII, sorted."""
    chars = {c for line in _CORPUS for c in line if not c.isspace()}
    chars |= {chr(c) for c in range(33, 127)}
    return sorted(chars)


def _tiny_bert_tokenizer():
    from transformers import BertTokenizer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [c for c in _corpus_chars() if not ("A" <= c <= "Z")]  # lower-cased by the normaliser
    words = sorted({w.strip(".,").lower() for line in _CORPUS[:4] for w in line.split() if len(w.strip(".,")) > 1})
    pieces = specials + chars + ["##" + c for c in chars if c.isascii() and c.isalnum()] + words
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    # HunyuanDiT's Chinese Bert (EasyAnimate V5 `tokenizer/`) is limited to 77 tokens.
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=77)


def _tiny_t5_tokenizer():
    from transformers import T5Tokenizer

    words = Counter(w.strip(".,").lower() for line in _CORPUS[:4] for w in line.split() if len(w.strip(".,")) > 1)
    chars = _corpus_chars()
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -3.0 - 1.0 / (1 + n)) for w, n in sorted(words.items())]
    pieces += [(c, -8.0) for c in chars] + [("▁" + c, -9.0) for c in chars if c.isascii()]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def write_tiny_bert_t5(folder: str | Path) -> Path:
    """Write EasyAnimate V5's two encoders under `folder`.

    ``text_encoder/`` (BertModel: hidden 32, 2 layers, 2 heads) + ``tokenizer/`` (WordPiece BertTokenizer,
    model_max_length 77); ``text_encoder_2/`` (T5EncoderModel, gated-gelu as mT5: d_model 24, 2 layers,
    3 heads) + ``tokenizer_2/`` (Unigram T5Tokenizer). Returns `folder`.
    """
    from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

    folder = Path(folder)
    for sub in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"):
        (folder / sub).mkdir(parents=True, exist_ok=True)

    bert_tok = _tiny_bert_tokenizer()
    bert_tok.save_pretrained(str(folder / "tokenizer"))
    bert_config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": TINY_BERT_HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 128,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": len(bert_tok),
    }
    _write_json(folder / "text_encoder" / "config.json", bert_config)
    bert_cfg = BertConfig(**bert_config)
    _save_weights(_build(BertModel, bert_cfg), folder / "text_encoder")

    t5_tok = _tiny_t5_tokenizer()
    t5_tok.save_pretrained(str(folder / "tokenizer_2"))
    t5_config = {
        "architectures": ["T5EncoderModel"],
        "d_ff": 48,
        "d_kv": 8,
        "d_model": TINY_T5_HIDDEN,
        "dense_act_fn": "gelu_new",
        "dropout_rate": 0.1,
        "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": True,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "num_decoder_layers": 2,
        "num_heads": 3,
        "num_layers": 2,
        "pad_token_id": 0,
        "relative_attention_max_distance": 32,
        "relative_attention_num_buckets": 8,
        "tie_word_embeddings": False,
        "vocab_size": len(t5_tok),
    }
    _write_json(folder / "text_encoder_2" / "config.json", t5_config)
    t5_model = _build(T5EncoderModel, T5Config(**t5_config))
    _save_weights(t5_model, folder / "text_encoder_2", skip=("encoder.embed_tokens.weight",))
    return folder
