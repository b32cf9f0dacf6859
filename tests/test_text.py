"""Text encoders: Qwen2-VL (V5.1) against diffusers, Bert + T5 (V5) against the original pipeline's rules."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from easyanimate_core.testing.text import (
    TINY_BERT_HIDDEN,
    TINY_QWEN2VL_HIDDEN,
    TINY_T5_HIDDEN,
    write_tiny_bert_t5,
    write_tiny_qwen2vl,
)
from easyanimate_core.text import TextEmbeds, TextEncoder
from easyanimate_core.text_loading import load_text_encoder

ENGLISH = "A brown dog is shaking its head, sitting on a light-coloured sofa in a comfortable room."
CHINESE = "一只棕褐色的狗正摇晃着脑袋，坐在一个舒适的房间里的浅色沙发上。"
NEG_ENGLISH = "Twisted body, limb deformities, text captions, comic, static, ugly, error, messy code."
NEG_CHINESE = "扭曲的身体，肢体残缺，文本字幕，漫画，静止，丑陋，错误，乱码。"


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return write_tiny_qwen2vl(tmp_path_factory.mktemp("qwen") / "EasyAnimateV5.1-tiny")


@pytest.fixture(scope="module")
def bert_t5_dir(tmp_path_factory) -> Path:
    return write_tiny_bert_t5(tmp_path_factory.mktemp("bert_t5") / "EasyAnimateV5-tiny")


@pytest.fixture(scope="module")
def qwen(qwen_dir) -> TextEncoder:
    return load_text_encoder(qwen_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def diffusers_pipe(qwen_dir):
    """diffusers' EasyAnimatePipeline holding only the text encoder, loaded by transformers itself."""
    from diffusers import EasyAnimatePipeline
    from transformers import Qwen2Tokenizer, Qwen2VLForConditionalGeneration

    tokenizer = Qwen2Tokenizer.from_pretrained(str(qwen_dir / "tokenizer"))
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(qwen_dir / "text_encoder"), local_files_only=True)
    return EasyAnimatePipeline(vae=None, text_encoder=model, tokenizer=tokenizer, transformer=None, scheduler=None)


def _diffusers_encode(pipe, prompts, negatives, max_sequence_length):
    with torch.no_grad():
        pos, neg, pos_mask, neg_mask = pipe.encode_prompt(
            prompts,
            negative_prompt=negatives,
            do_classifier_free_guidance=True,
            device=torch.device("cpu"),
            max_sequence_length=max_sequence_length,
        )
    return pos, neg, pos_mask, neg_mask


# ---------------------------------------------------------------------------------------------------------------
# V5.1: Qwen2-VL


@pytest.mark.parametrize("max_sequence_length", [128, 256, 24])
def test_qwen2vl_matches_diffusers(qwen, diffusers_pipe, max_sequence_length):
    prompts = [ENGLISH, CHINESE]
    negatives = [NEG_ENGLISH, NEG_CHINESE]
    ref_pos, ref_neg, ref_pos_mask, ref_neg_mask = _diffusers_encode(
        diffusers_pipe, prompts, negatives, max_sequence_length
    )
    pos = qwen.encode(prompts, max_sequence_length=max_sequence_length)
    neg = qwen.encode(negatives, max_sequence_length=max_sequence_length)

    assert pos.embeds.shape == (2, max_sequence_length, TINY_QWEN2VL_HIDDEN)
    assert pos.embeds_2 is None and pos.mask_2 is None
    torch.testing.assert_close(pos.embeds, ref_pos, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg.embeds, ref_neg, rtol=0, atol=1e-6)
    assert torch.equal(pos.mask, ref_pos_mask) and torch.equal(neg.mask, ref_neg_mask)


def test_qwen2vl_empty_negative_and_single_prompt(qwen, diffusers_pipe):
    ref_pos, ref_neg, ref_pos_mask, ref_neg_mask = _diffusers_encode(diffusers_pipe, CHINESE, "", 256)
    pos = qwen.encode(CHINESE)  # a single string is one prompt
    neg = qwen.encode([""])
    torch.testing.assert_close(pos.embeds, ref_pos, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg.embeds, ref_neg, rtol=0, atol=1e-6)
    assert torch.equal(pos.mask, ref_pos_mask) and torch.equal(neg.mask, ref_neg_mask)


def test_qwen2vl_mask_counts_chat_tokens(qwen):
    tokenizer = qwen.tokenizer
    prompts = ["a dog", CHINESE, ""]
    out = qwen.encode(prompts, max_sequence_length=200)
    assert out.mask.dtype == torch.long and out.mask.shape == (3, 200)
    for row, prompt in zip(out.mask, prompts):
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_end|>\n<|im_start|>assistant\n")
        n = len(tokenizer(chat).input_ids)
        assert n < 200
        assert row[:n].eq(1).all() and row[n:].eq(0).all()  # right padding


def test_qwen2vl_reuse_and_batching(qwen):
    a = qwen.encode([ENGLISH, CHINESE])
    b = qwen.encode([ENGLISH, CHINESE])
    assert torch.equal(a.embeds, b.embeds) and torch.equal(a.mask, b.mask)  # nothing carried between calls
    single = qwen.encode([CHINESE])
    valid = single.mask[0].bool()
    torch.testing.assert_close(a.embeds[1][valid], single.embeds[0][valid], rtol=0, atol=1e-5)


def test_qwen2vl_dtype_and_vision_tower_dropped(qwen_dir):
    enc = load_text_encoder(qwen_dir, dtype=torch.bfloat16)
    assert enc.kind == "qwen2vl" and enc.hidden_size == TINY_QWEN2VL_HIDDEN and enc.hidden_size_2 is None
    assert enc.dtype == torch.bfloat16
    assert not any("visual" in name for name, _ in enc.model.named_parameters())
    out = enc.encode(["a dog"])
    assert out.embeds.dtype == torch.bfloat16 and torch.isfinite(out.embeds.float()).all()


def test_original_and_diffusers_layouts_agree(qwen_dir, qwen, diffusers_pipe, tmp_path):
    diffusers_dir = tmp_path / "EasyAnimateV5.1-tiny-diffusers"
    diffusers_pipe.save_pretrained(str(diffusers_dir))  # nested text_config, model_index.json, generation_config
    assert (diffusers_dir / "model_index.json").is_file()
    from_diffusers = load_text_encoder(diffusers_dir, dtype=torch.float32)
    from_paths = load_text_encoder(
        {"text_encoder": qwen_dir / "text_encoder", "tokenizer": str(qwen_dir / "tokenizer")}, dtype=torch.float32
    )
    ref = qwen.encode([ENGLISH, CHINESE, ""])
    for enc in (from_diffusers, from_paths):
        out = enc.encode([ENGLISH, CHINESE, ""])
        assert torch.equal(out.embeds, ref.embeds) and torch.equal(out.mask, ref.mask)


# ---------------------------------------------------------------------------------------------------------------
# V5: Bert + T5


def _original_v5_reference(folder: Path, prompts: list[str]):
    """The original pipeline's V5 rules, written out: raw prompt, special tokens, max_length =
    min(model_max_length, 256), pad to it, truncate; encoders run WITHOUT the mask
    (`enable_text_attention_mask: false`), embedding = output [0] (last_hidden_state)."""
    from transformers import BertModel, BertTokenizer, T5EncoderModel, T5Tokenizer

    outs = []
    for model_cls, tok_cls, sub in (
        (BertModel, BertTokenizer, ""),
        (T5EncoderModel, T5Tokenizer, "_2"),
    ):
        tokenizer = tok_cls.from_pretrained(str(folder / f"tokenizer{sub}"))
        model = model_cls.from_pretrained(str(folder / f"text_encoder{sub}"), local_files_only=True).eval()
        max_length = min(tokenizer.model_max_length, 256)
        inputs = tokenizer(
            prompts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            embeds = model(inputs.input_ids)[0]
            masked = model(inputs.input_ids, attention_mask=inputs.attention_mask)[0]
        outs.append((embeds, inputs.attention_mask, inputs.input_ids, masked, tokenizer))
    return outs


def test_bert_t5_matches_original_rules(bert_t5_dir):
    enc = load_text_encoder(bert_t5_dir, dtype=torch.float32)
    assert enc.kind == "bert_t5"
    assert (enc.hidden_size, enc.hidden_size_2) == (TINY_BERT_HIDDEN, TINY_T5_HIDDEN)

    for prompts in ([ENGLISH, CHINESE], [NEG_ENGLISH, NEG_CHINESE], [""]):
        out = enc.encode(prompts)
        (ref, ref_mask, ids, masked, bert_tok), (ref_2, ref_mask_2, ids_2, _, t5_tok) = _original_v5_reference(
            bert_t5_dir, prompts
        )
        assert out.embeds.shape == (len(prompts), 77, TINY_BERT_HIDDEN)  # Bert: tokenizer limit 77
        assert out.embeds_2.shape == (len(prompts), 256, TINY_T5_HIDDEN)  # T5: capped at 256
        torch.testing.assert_close(out.embeds, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.embeds_2, ref_2, rtol=0, atol=1e-6)
        assert torch.equal(out.mask, ref_mask) and torch.equal(out.mask_2, ref_mask_2)
        # masks: [CLS] ... [SEP] then padding for Bert; ... </s> then padding for T5
        for row, row_ids in zip(out.mask, ids):
            n = int(row.sum())
            assert row[:n].eq(1).all() and row[n:].eq(0).all()
            assert row_ids[0] == bert_tok.cls_token_id and row_ids[n - 1] == bert_tok.sep_token_id
        for row, row_ids in zip(out.mask_2, ids_2):
            n = int(row.sum())
            assert row[:n].eq(1).all() and row[n:].eq(0).all() and row_ids[n - 1] == t5_tok.eos_token_id
        # the unmasked forward matters: padding changes the Bert embedding of real tokens
        assert not torch.allclose(ref, masked)


def test_bert_t5_max_sequence_length(bert_t5_dir):
    enc = load_text_encoder(bert_t5_dir, dtype=torch.float32)
    out = enc.encode([ENGLISH], max_sequence_length=16)
    assert out.embeds.shape[1] == 16 and out.embeds_2.shape[1] == 16
    assert out.mask.all() and out.mask_2.all()  # truncated prompt fills every position
    with pytest.raises(ValueError, match="256"):
        enc.encode([ENGLISH], max_sequence_length=300)


# ---------------------------------------------------------------------------------------------------------------
# loading errors, TextEmbeds, writers


def test_missing_folders_raise_clear_errors(qwen_dir, bert_t5_dir, tmp_path):
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(qwen_dir / "text_encoder", no_tok / "text_encoder")
    with pytest.raises(ValueError, match=r"missing tokenizer/.*expected a model folder"):
        load_text_encoder(no_tok, dtype=torch.float32)

    no_t5 = tmp_path / "no_t5"
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(bert_t5_dir / sub, no_t5 / sub)
    with pytest.raises(ValueError, match="text_encoder_2/ is missing"):
        load_text_encoder(no_t5, dtype=torch.float32)

    with pytest.raises(ValueError, match="not a folder"):
        load_text_encoder(tmp_path / "nowhere", dtype=torch.float32)

    # detection reads config.json, not names: a T5 where the first encoder belongs is rejected
    wrong = tmp_path / "wrong"
    shutil.copytree(bert_t5_dir / "text_encoder_2", wrong / "text_encoder")
    shutil.copytree(bert_t5_dir / "tokenizer_2", wrong / "tokenizer")
    with pytest.raises(ValueError, match="neither Qwen2-VL"):
        load_text_encoder(wrong, dtype=torch.float32)


def test_text_embeds_helpers():
    e = TextEmbeds(torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.embeds = torch.zeros(1)  # type: ignore[misc]
    h = e.to("cpu", torch.float16)
    assert h.embeds.dtype == torch.float16 and h.mask.dtype == torch.long
    both = TextEmbeds.cat([e, e.repeat(2)])
    assert both.batch_size == 6 and torch.equal(both.mask[2], both.mask[3]) and torch.equal(both.mask[3], e.mask[0])
    assert torch.equal(both.embeds[5], e.embeds[1])
    with pytest.raises(ValueError):
        TextEmbeds(torch.randn(2, 5, 4), torch.ones(2, 6))
    with pytest.raises(ValueError):
        TextEmbeds(torch.randn(2, 5, 4), torch.ones(2, 5), embeds_2=torch.randn(2, 3, 4))


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("writer", [write_tiny_qwen2vl, write_tiny_bert_t5])
def test_tiny_writers_are_deterministic(writer, tmp_path):
    a = _tree_bytes(writer(tmp_path / "a"))
    b = _tree_bytes(writer(tmp_path / "b"))
    assert a.keys() == b.keys() and a == b
    assert sum(len(v) for v in a.values()) < 1_000_000
    assert any(k.endswith("model.safetensors") for k in a) and any(k.endswith("tokenizer.json") for k in a)


# fp8 (e4m3, 3 mantissa bits) linear weights: the embeddings stay within this relative L2 error of the bf16
# encoder's on the tiny random models (the README states the same bound).
FP8_TEXT_TOLERANCE = 0.1


@pytest.mark.parametrize("which", ["qwen", "bert_t5"])
def test_fp8_text_encoder_stores_linear_weights_in_fp8_and_stays_close(which, qwen_dir, bert_t5_dir):
    folder = qwen_dir if which == "qwen" else bert_t5_dir
    plain = load_text_encoder(folder, dtype=torch.bfloat16)
    fp8 = load_text_encoder(folder, dtype=torch.bfloat16, weight_dtype=torch.float8_e4m3fn)
    for model, model8 in zip(plain.modules(), fp8.modules(), strict=True):
        # every linear layer but T5's `wo` (T5 casts its input to wo's weight dtype)
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith(".wo")]
        assert linears
        dtypes = {n: p.dtype for n, p in model8.named_parameters()}
        assert all(dtypes[f"{n}.weight"] == torch.float8_e4m3fn for n in linears)
        assert {d for n, d in dtypes.items() if d != torch.float8_e4m3fn} == {torch.bfloat16}  # norms, embeddings
    prompts = ["a red fox runs through the snow", "一只猫"]
    a, b = plain.encode(prompts), fp8.encode(prompts)
    for x, y in [(a.embeds, b.embeds)] + ([(a.embeds_2, b.embeds_2)] if which == "bert_t5" else []):
        err = ((y.float() - x.float()).norm() / x.float().norm()).item()
        assert 0 < err < FP8_TEXT_TOLERANCE, err


def test_broken_text_encoder_files_are_errors_naming_them(qwen_dir, tmp_path):
    folder = shutil.copytree(qwen_dir, tmp_path / "broken")
    config = folder / "text_encoder" / "config.json"
    good = config.read_text(encoding="utf-8")
    config.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{config} is not valid JSON \(.*\): re-download it"):
        load_text_encoder(folder, dtype=torch.float32)
    config.write_text(good, encoding="utf-8")
    (weights,) = (folder / "text_encoder").glob("*.safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"^cannot read weights file {weights}: it is truncated or corrupt"):
        load_text_encoder(folder, dtype=torch.float32)


def test_text_encoder_weights_missing_from_the_files_are_an_error(qwen_dir, tmp_path):
    """transformers would fill them with random values (prompt embeddings of noise) and only log it."""
    folder = shutil.copytree(qwen_dir, tmp_path / "deeper")
    config = folder / "text_encoder" / "config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    for cfg in (data, data.get("text_config") or {}):
        if "num_hidden_layers" in cfg:
            cfg["num_hidden_layers"] += 2  # a config for a deeper model than the weights
    config.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"weights that its config.json describes are not in its weight files \(e\.g\. "
    ):
        load_text_encoder(folder, dtype=torch.float32)
    assert load_text_encoder(qwen_dir, dtype=torch.float32).kind == "qwen2vl"  # the matching pair loads


def test_a_tokenizer_of_another_model_is_an_error(qwen_dir, bert_t5_dir, tmp_path):
    """It would load and encode into token ids that mean nothing to the encoder."""
    folder = shutil.copytree(qwen_dir, tmp_path / "mixed")
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(bert_t5_dir / "tokenizer", folder / "tokenizer")
    with pytest.raises(
        ValueError, match=r"holds a BertTokenizer but the text encoder is Qwen2-VL: the tokenizer belongs"
    ):
        load_text_encoder(folder, dtype=torch.float32)
    v5 = shutil.copytree(bert_t5_dir, tmp_path / "v5")
    shutil.rmtree(v5 / "tokenizer_2")
    shutil.copytree(bert_t5_dir / "tokenizer", v5 / "tokenizer_2")  # Bert's where T5's belongs
    with pytest.raises(ValueError, match=r"tokenizer_2 holds a BertTokenizer but the text encoder is T5"):
        load_text_encoder(v5, dtype=torch.float32)


def _drop_tokenizer_class(folder):
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("tokenizer_class", None)
    config.write_text(json.dumps(data))


def test_a_tokenizer_of_another_kind_without_a_class_name_is_an_error(qwen_dir, bert_t5_dir, tmp_path):
    """No tokenizer_config.json class to go by: tokenizer.json's model type (WordPiece is Bert's) tells."""
    folder = shutil.copytree(qwen_dir, tmp_path / "mixed")
    shutil.rmtree(folder / "tokenizer")
    shutil.copytree(bert_t5_dir / "tokenizer", folder / "tokenizer")
    _drop_tokenizer_class(folder / "tokenizer")
    with pytest.raises(ValueError, match=r"tokenizer.json is a WordPiece tokenizer but the text encoder is Qwen2-VL"):
        load_text_encoder(folder, dtype=torch.float32)


def test_a_tokenizer_larger_than_the_encoders_vocabulary_is_an_error(qwen_dir, tmp_path):
    folder = shutil.copytree(qwen_dir, tmp_path / "small")
    config = folder / "text_encoder" / "config.json"
    data = json.loads(config.read_text())
    reference = load_text_encoder(qwen_dir, dtype=torch.float32)
    rows = reference.model.get_input_embeddings().num_embeddings
    assert len(reference.tokenizer) <= rows
    # Drop the embedding rows past the tokenizer's last id, and a few more: ids would index past the table.
    short = len(reference.tokenizer) - 3
    for holder in (data, data.get("text_config") or {}):
        if "vocab_size" in holder:
            holder["vocab_size"] = short
    config.write_text(json.dumps(data))
    from safetensors.torch import load_file, save_file

    for weights in (folder / "text_encoder").glob("*.safetensors"):
        tensors = load_file(weights)
        tensors = {k: (v[:short].clone() if v.shape[0] == rows else v) for k, v in tensors.items()}
        save_file(tensors, weights)
    with pytest.raises(
        ValueError, match=rf"has {len(reference.tokenizer)} tokens but the text encoder embeds only {short}"
    ):
        load_text_encoder(folder, dtype=torch.float32)


def test_out_of_memory_while_encoding_says_what_to_change(qwen, qwen_dir, monkeypatch):
    """The error keeps its type (ComfyUI still sees an out-of-memory error) and says the weights' size, fp8 storage
    where not used yet, and what memory mode none keeps on the GPU."""
    from easyanimate_core.handles import TextEncoderHandle
    from easyanimate_core.memory import MemoryPolicy, readable_size
    from easyanimate_core.runner import encode_prompts

    cpu = torch.device("cpu")
    original = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    def failing(self, *args, **kwargs):
        raise original

    monkeypatch.setattr(TextEncoder, "encode", failing)
    with pytest.raises(torch.OutOfMemoryError) as info:
        encode_prompts(TextEncoderHandle(qwen, torch.float32), ENGLISH, NEG_ENGLISH, cpu, cpu)
    weights = readable_size(sum(p.numel() * p.element_size() for module in qwen.modules() for p in module.parameters()))
    assert str(info.value).startswith(f"out of memory on cpu while encoding the prompt, with {weights} of text")
    fp8_note = "; fp8 stores its linear layers' weights in one byte each instead of 4 (the loader's text_encoder_fp8"
    assert fp8_note in str(info.value) and "memory mode none the transformer" in str(info.value)
    assert info.value.__cause__ is original and str(info.value).endswith(
        "[CUDA out of memory. Tried to allocate 1.00 GiB]"
    )
    fp8 = load_text_encoder(qwen_dir, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)
    with pytest.raises(torch.OutOfMemoryError) as info:
        encode_prompts(TextEncoderHandle(fp8, torch.float32, MemoryPolicy("model_offload")), ENGLISH, None, cpu, cpu)
    assert "fp8" not in str(info.value) and "memory mode none" not in str(info.value)
