"""Checkpoint loading: every official layout, single files (bf16/fp16/fp8), detection, error paths, memory.

Tiny checkpoints of all seven published kinds (V5.1 T2V/InP/Control/Control-Camera, V5 T2V/InP/Control) are
written once per module in both layouts, into folders named after a *different* published checkpoint, so any
detection that peeked at the folder name would fail.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil

import pytest
import torch
from diffusers import EasyAnimateTransformer3DModel
from safetensors.torch import load_file, save_file

from easyanimate_core import loading
from easyanimate_core.checkpoint import check_compatible, load_checkpoint
from easyanimate_core.configs import TransformerConfig
from easyanimate_core.keys import transformer_to_ours
from easyanimate_core.loading import load_transformer, load_vae
from easyanimate_core.testing import tiny_transformer_config, write_single_file, write_tiny_checkpoint
from easyanimate_core.testing.text import TINY_BERT_HIDDEN, TINY_QWEN2VL_HIDDEN, TINY_T5_HIDDEN
from easyanimate_core.testing.transformer import WEIGHTS_NAME, write_tiny_transformer
from easyanimate_core.testing.vae import make_tiny_vae_state_dict, tiny_vae_config
from easyanimate_core.text_loading import load_text_encoder

FP32, BF16, FP16, FP8 = torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn
LAYOUTS = ("original", "diffusers")
CASES = [
    ("V5.1", "T2V"),
    ("V5.1", "InP"),
    ("V5.1", "Control"),
    ("V5.1", "Control-Camera"),
    ("V5", "T2V"),
    ("V5", "InP"),
    ("V5", "Control"),
]
IDS = [f"{version}-{variant}" for version, variant in CASES]
# The published names (huggingface.co/alibaba-pai); each tiny checkpoint is stored under another one's name.
HF_NAMES = {
    ("V5.1", "T2V"): "EasyAnimateV5.1-12b-zh",
    ("V5.1", "InP"): "EasyAnimateV5.1-12b-zh-InP",
    ("V5.1", "Control"): "EasyAnimateV5.1-12b-zh-Control",
    ("V5.1", "Control-Camera"): "EasyAnimateV5.1-12b-zh-Control-Camera",
    ("V5", "T2V"): "EasyAnimateV5-12b-zh",
    ("V5", "InP"): "EasyAnimateV5-7b-zh-InP",
    ("V5", "Control"): "EasyAnimateV5-12b-zh-Control",
}
# Fields of the transformer config that shape the network or select the variant.
SHAPE_FIELDS = (
    "num_layers",
    "mmdit_layers",
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "patch_size",
    "time_embed_dim",
    "text_embed_dim",
    "text_embed_dim_t5",
    "add_norm_text_encoder",
    "after_norm",
    "add_ref_latent_in_control_model",
)


def misleading_name(case: tuple[str, str], layout: str) -> str:
    """The name of another published checkpoint (V5.1 Control lands in "EasyAnimateV5-7b-zh-InP"), with
    "-diffusers" on original-layout folders and not on diffusers ones."""
    other = CASES[(CASES.index(case) + 3) % len(CASES)]
    return HF_NAMES[other] + ("-diffusers" if layout == "original" else "")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        (case, layout): write_tiny_checkpoint(
            root / misleading_name(case, layout), version=case[0], variant=case[1], layout=layout, seed=0
        )
        for case in CASES
        for layout in LAYOUTS
    }


def config_of(checkpoints, case) -> dict:
    return json.loads((checkpoints[case, "original"] / "transformer" / "config.json").read_text(encoding="utf-8"))


def make_inputs(cfg: TransformerConfig, seed: int = 1) -> dict:
    """Latents [2, C, 2, 4, 6], timesteps, text (and T5 text), and the variant's conditioning channels."""
    g = torch.Generator().manual_seed(seed)
    c, extra = cfg.out_channels, cfg.in_channels - cfg.out_channels
    cond = torch.randn(2, extra, 2, 4, 6, generator=g) if extra else None
    inpaint = cfg.variant.value == "InP"
    return {
        "latents": torch.randn(2, c, 2, 4, 6, generator=g),
        "timestep": torch.tensor([999.0, 420.5]),
        "text": torch.randn(2, 5, cfg.text_embed_dim, generator=g),
        "text_2": None if cfg.text_embed_dim_t5 is None else torch.randn(2, 4, cfg.text_embed_dim_t5, generator=g),
        "inpaint": cond if inpaint else None,
        "control": None if inpaint else cond,
    }


def run(model, x: dict, dtype: torch.dtype = FP32) -> torch.Tensor:
    """Our forward (``model(latents, timestep, text, text_2, inpaint=, control=)``), returned in float32."""

    def cast(t):
        return None if t is None else t.to(dtype)

    with torch.no_grad():
        out = model(
            cast(x["latents"]),
            x["timestep"],
            cast(x["text"]),
            cast(x["text_2"]),
            inpaint=cast(x["inpaint"]),
            control=cast(x["control"]),
        )
    return out.float()


def run_diffusers(model, x: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(
            x["latents"],
            x["timestep"],
            encoder_hidden_states=x["text"],
            encoder_hidden_states_t5=x["text_2"],
            inpaint_latents=x["inpaint"],
            control_latents=x["control"],
            return_dict=False,
        )[0]


def assert_same_state(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ[:5]}"


def copy_checkpoint(checkpoints, case, layout, dest):
    return shutil.copytree(checkpoints[case, layout], dest)


# ------------------------------------------------------------------------------------------------------------
# 1. every layout loads to the same model as its twin, and as diffusers' own loader


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_original_and_diffusers_layouts_load_the_same_model(checkpoints, case):
    original, rep_o = load_transformer(checkpoints[case, "original"] / "transformer", dtype=FP32)
    diffusers_layout, rep_d = load_transformer(checkpoints[case, "diffusers"] / "transformer", dtype=FP32)
    assert (rep_o.layout, rep_d.layout) == ("original", "diffusers")
    assert rep_o.missing == rep_o.unexpected == rep_d.missing == rep_d.unexpected == []
    assert original.config == diffusers_layout.config
    assert (original.config.version, original.config.variant.value) == case
    assert_same_state(original.state_dict(), diffusers_layout.state_dict())

    ref = EasyAnimateTransformer3DModel.from_pretrained(checkpoints[case, "diffusers"] / "transformer").eval()
    assert_same_state(original.state_dict(), transformer_to_ours(ref.state_dict()))

    x = make_inputs(original.config)
    out = run(original, x)
    assert torch.equal(out, run(diffusers_layout, x))
    expected = run_diffusers(ref, x)
    assert expected.abs().max() > 0.1  # not a comparison of two near-zero tensors
    assert (out - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case,layout", [(("V5.1", "InP"), "original"), (("V5", "Control"), "diffusers")], ids=str)
def test_sharded_folder_loads_like_unsharded(checkpoints, tmp_path, case, layout):
    folder = write_tiny_transformer(tmp_path / "transformer", config_of(checkpoints, case), layout=layout, shards=3)
    assert len(list(folder.glob("*.safetensors"))) == 3 and (folder / f"{WEIGHTS_NAME}.index.json").is_file()
    sharded, report = load_transformer(folder, dtype=FP32)
    whole, _ = load_transformer(checkpoints[case, layout] / "transformer", dtype=FP32)
    assert len(report.files) == 3 and report.layout == layout
    assert sharded.config == whole.config
    assert_same_state(sharded.state_dict(), whole.state_dict())


# ------------------------------------------------------------------------------------------------------------
# 2. single files: config inferred from weight shapes; bf16, fp16 and fp8 storage

SINGLE_FILE_CONFIGS = {
    "V5.1-Control-Camera": tiny_transformer_config("Control-Camera", "V5.1", TINY_QWEN2VL_HIDDEN),
    "V5.1-Control": tiny_transformer_config("Control", "V5.1", TINY_QWEN2VL_HIDDEN),
    "V5-InP": tiny_transformer_config("InP", "V5", TINY_BERT_HIDDEN, TINY_T5_HIDDEN),
    # one single-stream block (index >= mmdit_layers) and the after-norm of the feed-forward
    "V5.1-T2V-single-stream-after-norm": {
        **tiny_transformer_config("T2V", "V5.1", TINY_QWEN2VL_HIDDEN),
        "num_layers": 3,
        "mmdit_layers": 2,
        "after_norm": True,
    },
}


def is_block_matrix(name: str, t: torch.Tensor) -> bool:
    return name.startswith("transformer_blocks.") and name.endswith(".weight") and t.ndim == 2


@pytest.mark.parametrize("file_dtype", [BF16, FP16, FP8], ids=str)
@pytest.mark.parametrize("name", list(SINGLE_FILE_CONFIGS))
def test_single_file_config_is_inferred_from_weights(tmp_path, name, file_dtype):
    config = SINGLE_FILE_CONFIGS[name]
    path = write_single_file(tmp_path / "EasyAnimateV5-7b-zh.safetensors", config, dtype=file_dtype)
    compute = BF16 if file_dtype == FP8 else file_dtype
    model, report = load_transformer(path, dtype=compute)
    expected = TransformerConfig.from_dict(config)
    assert {f: getattr(model.config, f) for f in SHAPE_FIELDS} == {f: getattr(expected, f) for f in SHAPE_FIELDS}
    assert (model.config.version, model.config.variant) == (expected.version, expected.variant)
    assert report.files == [str(path)] and report.layout == "original"

    stored = load_file(str(path))
    state = model.state_dict()
    for key, t in state.items():
        want = FP8 if file_dtype == FP8 and is_block_matrix(key, t) else compute
        assert t.dtype == want, key  # fp8: block matrices stay fp8; norms, biases, embeddings, head in bf16
        assert torch.equal(t.float(), stored[key].float()), key  # exactly the file's values


def test_single_files_compute_close_to_the_fp32_folder_and_fp8_close_to_bf16(tmp_path):
    """bf16/fp16 single files against the fp32 folder, and fp8 storage against bf16.

    Tolerances are relative L2 errors of the output. bf16 keeps 8 significant bits (rounding error up to
    2^-9 = 0.2 % per value; measured 0.6 % after two blocks), fp16 11 bits (measured 0.08 %). fp8 e4m3 keeps 4:
    rounding moves each block weight by up to 2^-4 = 6.25 % of its value, about 3.6 % RMS. A matmul averages
    these independent errors, so a quantised layer's output is off by about that RMS fraction, and the paths
    that stay in bf16 (patch embedding, text projections, norms, output head, the residual stream) dilute it;
    measured 1.2-1.5 % for these tiny models. We allow 5 %, below one quantised layer's own error, and require
    more than 0.1 %, which shows the weights really were quantised. The fp8 path itself is checked exactly:
    fp8-stored weights compute like the same values dequantised to bf16 at load.
    """
    config = SINGLE_FILE_CONFIGS["V5.1-T2V-single-stream-after-norm"]
    folder_model, _ = load_transformer(write_tiny_transformer(tmp_path / "folder", config), dtype=FP32)
    x = make_inputs(folder_model.config)
    ref = run(folder_model, x)

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    outputs = {}
    for dt, tol in ((BF16, 2e-2), (FP16, 3e-3)):
        model, _ = load_transformer(write_single_file(tmp_path / f"{dt}.safetensors", config, dtype=dt), dtype=dt)
        outputs[dt] = run(model, x, dt)
        assert rel(outputs[dt], ref) < tol, dt

    fp8_file = write_single_file(tmp_path / "fp8.safetensors", config, dtype=FP8)
    fp8, _ = load_transformer(fp8_file, dtype=BF16)
    assert fp8.transformer_blocks[0].attn1.to_q.weight.dtype == FP8
    out8 = run(fp8, x, BF16)
    assert 1e-3 < rel(out8, outputs[BF16]) < 0.05
    dequantised, _ = load_transformer(fp8_file, dtype=BF16, weight_dtype=BF16)
    assert dequantised.transformer_blocks[0].attn1.to_q.weight.dtype == BF16
    assert torch.equal(out8, run(dequantised, x, BF16))


def test_fp8_storage_of_a_bf16_file(tmp_path):
    config = SINGLE_FILE_CONFIGS["V5.1-Control"]
    path = write_single_file(tmp_path / "bf16.safetensors", config, dtype=BF16)
    model, _ = load_transformer(path, dtype=BF16, weight_dtype=FP8)
    stored = load_file(str(path))
    for key, t in model.state_dict().items():
        assert t.dtype == (FP8 if is_block_matrix(key, t) else BF16), key
        assert torch.equal(t, stored[key].to(t.dtype)), key


def test_single_transformer_and_vae_files_with_text_encoder_from_a_folder(checkpoints, tmp_path):
    folder = checkpoints[("V5.1", "InP"), "original"]
    t_file = write_single_file(
        tmp_path / "diffusion_models" / "ea.safetensors", config_of(checkpoints, ("V5.1", "InP"))
    )
    vae_file = tmp_path / "vae" / "ea_vae.safetensors"
    vae_file.parent.mkdir()
    shutil.copy(folder / "vae" / WEIGHTS_NAME, vae_file)

    transformer, _ = load_transformer(t_file, dtype=BF16)
    vae, report = load_vae(vae_file, config=tiny_vae_config())
    folder_vae, _ = load_vae(folder / "vae")
    assert report.files == [str(vae_file)]
    assert vae.config == folder_vae.config
    assert_same_state(vae.state_dict(), folder_vae.state_dict())
    text_encoder = load_text_encoder(folder, dtype=FP32)
    check_compatible(transformer.config, vae, text_encoder)  # the three parts belong together
    assert (transformer.config.version, transformer.config.variant.value) == ("V5.1", "InP")

    # Without a config a single VAE file is read as the full-size V5.x VAE; this tiny one does not fit.
    with pytest.raises(ValueError, match=rf"{vae_file.name} do not fit its config \(size mismatch") as info:
        load_vae(vae_file)
    vae_file.with_suffix(".json").write_text(json.dumps(tiny_vae_config()), encoding="utf-8")
    beside, _ = load_vae(vae_file)  # <name>.json beside the file is its config (the CLI's --vae and the node)
    assert_same_state(beside.state_dict(), folder_vae.state_dict())
    message = str(info.value)  # three mismatches and a count, not ~200 lines, and where the config comes from
    assert message.count("size mismatch") == 3 and re.search(r"; and \d+ more\)", message) and "\n" not in message
    assert message.endswith("a single VAE file takes its config from <name>.json beside it (else the V5.x VAE's)")


# ------------------------------------------------------------------------------------------------------------
# 3. detection from files and weights, never from the folder name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_version_and_variant_come_from_the_files_not_the_folder_name(checkpoints, case, layout):
    folder = checkpoints[case, layout]
    assert folder.name == misleading_name(case, layout) != HF_NAMES[case]
    models, info, reports = load_checkpoint(folder, dtype=FP32)
    assert (info.version, info.variant, info.layout) == (*case, layout)
    assert info.text_encoder == ("qwen2vl" if case[0] == "V5.1" else "bert_t5")
    assert reports["transformer"].layout == layout
    assert models.transformer.config.version == case[0]


def test_v51_control_in_a_folder_named_like_v5_inp(checkpoints):
    folder = checkpoints[("V5.1", "Control"), "diffusers"]
    assert folder.name == "EasyAnimateV5-7b-zh-InP"
    _, info, _ = load_checkpoint(folder, dtype=FP32, load_text=False)
    assert (info.version, info.variant) == ("V5.1", "Control")


# ------------------------------------------------------------------------------------------------------------
# 4. error paths


@pytest.mark.parametrize(
    "transformer_case,text_case,pattern",
    [
        (("V5.1", "T2V"), ("V5", "T2V"), r"transformer is EasyAnimate V5\.1.*text encoder is bert_t5 \(V5\)"),
        (("V5", "T2V"), ("V5.1", "T2V"), r"transformer is EasyAnimate V5 .*text encoder is qwen2vl \(V5\.1\)"),
    ],
    ids=["V5.1-with-Bert-T5", "V5-with-Qwen2-VL"],
)
def test_text_encoders_of_the_other_version_are_refused(checkpoints, tmp_path, transformer_case, text_case, pattern):
    folder = copy_checkpoint(checkpoints, transformer_case, "original", tmp_path / "mixed")
    for sub in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        source = checkpoints[text_case, "original"] / sub
        if source.is_dir():
            shutil.copytree(source, folder / sub)
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(folder, dtype=FP32)


def test_vae_with_other_latent_channels_is_refused(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints, ("V5.1", "InP"), "original", tmp_path / "ckpt")
    vae_config = {**tiny_vae_config(), "latent_channels": 8}
    (folder / "vae" / "config.json").write_text(json.dumps(vae_config), encoding="utf-8")
    save_file(make_tiny_vae_state_dict(0, vae_config), str(folder / "vae" / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"VAE has 8 latent channels but the transformer predicts 16"):
        load_checkpoint(folder, dtype=FP32, load_text=False)


@pytest.mark.parametrize(
    "version,text_dims,pattern",
    [
        ("V5.1", (48, None), r"text encoder's width 32 does not match .*\(48\)"),
        ("V5", (TINY_BERT_HIDDEN, 40), r"T5 text encoder's width 24 does not match .*\(40\)"),
    ],
)
def test_text_encoder_width_mismatch_is_refused(checkpoints, tmp_path, version, text_dims, pattern):
    folder = copy_checkpoint(checkpoints, (version, "T2V"), "original", tmp_path / "ckpt")
    config = tiny_transformer_config("T2V", version, *text_dims)
    write_tiny_transformer(folder / "transformer", config)  # the transformer of another model size
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(folder, dtype=FP32)


def transformer_copy(checkpoints, tmp_path, case=("V5.1", "InP")):
    return shutil.copytree(checkpoints[case, "original"] / "transformer", tmp_path / "transformer")


def test_truncated_safetensors_is_an_error_naming_the_file(checkpoints, tmp_path):
    folder = transformer_copy(checkpoints, tmp_path)
    weights = folder / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{weights}.*truncated"):
        load_transformer(folder)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin"])
def test_garbage_file_is_an_error_naming_the_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match=str(path)):
        load_transformer(path)


def test_safetensors_with_another_suffix_is_recognised(checkpoints, tmp_path):
    folder = checkpoints[("V5", "T2V"), "original"] / "transformer"
    path = shutil.copy(folder / WEIGHTS_NAME, tmp_path / "easyanimate_v5.ckpt")  # never unpickled
    model, _ = load_transformer(path, dtype=FP32, config=config_of(checkpoints, ("V5", "T2V")))
    assert_same_state(model.state_dict(), load_transformer(folder, dtype=FP32)[0].state_dict())


def test_missing_keys_are_listed(checkpoints, tmp_path):
    folder = transformer_copy(checkpoints, tmp_path)
    sd = load_file(str(folder / WEIGHTS_NAME))
    del sd["transformer_blocks.1.attn2.to_q.weight"], sd["proj_out.bias"]
    save_file(sd, str(folder / WEIGHTS_NAME))
    with pytest.raises(ValueError, match=r"missing 2 weights") as err:
        load_transformer(folder)
    assert "transformer_blocks.1.attn2.to_q.weight" in str(err.value) and "proj_out.bias" in str(err.value)
    assert str(folder / WEIGHTS_NAME) in str(err.value)


def test_unexpected_keys_are_reported_not_fatal(checkpoints, tmp_path):
    folder = transformer_copy(checkpoints, tmp_path)
    clean, _ = load_transformer(folder, dtype=FP32)
    sd = load_file(str(folder / WEIGHTS_NAME))
    sd["transformer_blocks.0.attn1.lora_A.weight"] = torch.zeros(4, 32)
    sd["pos_embed.extra"] = torch.zeros(3)
    save_file(sd, str(folder / WEIGHTS_NAME))
    model, report = load_transformer(folder, dtype=FP32)
    assert sorted(report.unexpected) == ["pos_embed.extra", "transformer_blocks.0.attn1.lora_A.weight"]
    assert report.missing == []
    x = make_inputs(model.config)
    assert torch.equal(run(model, x), run(clean, x))


def test_weights_that_do_not_fit_the_config_are_an_error(checkpoints, tmp_path):
    folder = transformer_copy(checkpoints, tmp_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, "attention_head_dim": 8}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"(?s)do not fit its config.*size mismatch"):
        load_transformer(folder)


@pytest.mark.parametrize("change", [{"num_layers": 1}, {"mmdit_layers": 1}])
def test_a_config_that_builds_fewer_blocks_than_the_weights_hold_is_an_error(checkpoints, tmp_path, change):
    """Ignoring the extra block weights would run a cut-down network (e.g. a 7B config beside 12B-deep weights)."""
    folder = transformer_copy(checkpoints, tmp_path)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["num_layers"] == 2  # so both changes leave weights of block 1 (or its text stream) unused
    (folder / "config.json").write_text(json.dumps({**config, **change}), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"hold block weights its config does not build \(\d+ keys in blocks 1-1, e\.g\. "
    ):
        load_transformer(folder)


def test_pickled_tensors_load_like_safetensors(checkpoints, tmp_path):
    folder = checkpoints[("V5", "Control"), "original"] / "transformer"
    sd = load_file(str(folder / WEIGHTS_NAME))
    torch.save(sd, tmp_path / "model.pt")
    torch.save({"state_dict": sd}, tmp_path / "model.bin")  # training-script wrapper
    reference, _ = load_transformer(folder, dtype=FP32)
    for name in ("model.pt", "model.bin"):
        model, report = load_transformer(tmp_path / name, dtype=FP32)
        assert report.files == [str(tmp_path / name)]
        assert_same_state(model.state_dict(), reference.state_dict())


class NotATensor:
    """A custom class: torch.load(weights_only=True) must refuse to rebuild it."""

    def __init__(self) -> None:
        self.payload = "anything"


class RunsCode:
    """A pickle that would run ``os.system`` when unpickled without weights_only."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_with_objects_are_refused(checkpoints, tmp_path):
    sd = load_file(str(checkpoints[("V5.1", "T2V"), "original"] / "transformer" / WEIGHTS_NAME))
    path = tmp_path / "model.pt"
    torch.save({**sd, "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match=rf"refused to load {path}.*NotATensor"):
        load_transformer(path)

    marker = tmp_path / "pwned"
    evil = tmp_path / "model.bin"
    with open(evil, "wb") as f:
        pickle.dump({"proj.weight": RunsCode(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match=rf"refused to load {evil}.*system"):
        load_transformer(evil)
    assert not marker.exists()  # the payload never ran


def test_missing_or_empty_folder_lists_the_expected_layout(tmp_path):
    expected = r"expected an EasyAnimate checkpoint folder: transformer/ .*vae/.*text_encoder/.*scheduler/"
    with pytest.raises(ValueError, match=rf"not found: {tmp_path / 'nowhere'}.*{expected}"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"{expected}.*found nothing"):
        load_checkpoint(tmp_path / "empty")


def test_incomplete_folders_name_what_is_missing(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints, ("V5.1", "T2V"), "original", tmp_path / "ckpt")
    shutil.rmtree(folder / "vae")
    with pytest.raises(ValueError, match=r"has no vae/ folder; expected an EasyAnimate checkpoint folder"):
        load_checkpoint(folder)
    (folder / "transformer" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"has no config.json"):
        load_transformer(folder / "transformer")
    (folder / "transformer" / WEIGHTS_NAME).unlink()
    (folder / "transformer" / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no weights in .*diffusion_pytorch_model.safetensors"):
        load_transformer(folder / "transformer")


def test_missing_shard_is_named(checkpoints, tmp_path):
    folder = write_tiny_transformer(tmp_path / "transformer", config_of(checkpoints, ("V5.1", "T2V")), shards=3)
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing: diffusion_pytorch_model-00002-of-00003.safetensors"):
        load_transformer(folder)


def test_diffusers_folder_of_another_model_is_refused(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints, ("V5.1", "T2V"), "diffusers", tmp_path / "ckpt")
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    index["transformer"] = ["diffusers", "WanTransformer3DModel"]
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(ValueError, match=r"describes a WanTransformer3DModel, not an EasyAnimate transformer"):
        load_checkpoint(folder)


# ------------------------------------------------------------------------------------------------------------
# 5. weights are allocated once: the model is built on meta and keeps the tensors read from the file


@pytest.mark.parametrize("layout", LAYOUTS)
def test_model_is_built_on_meta_and_keeps_the_tensors_read(checkpoints, monkeypatch, layout):
    reads, built = [], []
    read, build = loading.read_state_dict, loading.EasyAnimateTransformer

    def spy_read(path):
        reads.append(read(path))
        return reads[-1]

    def spy_build(cfg):
        model = build(cfg)
        built.append({p.device.type for p in model.parameters()})
        return model

    monkeypatch.setattr(loading, "read_state_dict", spy_read)
    monkeypatch.setattr(loading, "EasyAnimateTransformer", spy_build)
    folder = checkpoints[("V5.1", "Control"), layout]
    model, _ = load_transformer(folder / "transformer", dtype=FP32)  # the tiny files are fp32: no cast
    assert built == [{"meta"}]
    assert len(reads) == 1
    file_ptrs = {k: v.data_ptr() for k, v in transformer_to_ours(reads[0]).items()}
    state = model.state_dict()
    assert sorted(state) == sorted(file_ptrs)
    assert all(t.data_ptr() == file_ptrs[k] for k, t in state.items())  # assign=True kept the tensors

    vae_reads = []
    monkeypatch.setattr(loading, "read_state_dict", lambda p: vae_reads.append(read(p)) or vae_reads[-1])
    vae, _ = load_vae(folder / "vae", dtype=FP32)
    vae_ptrs = {k: v.data_ptr() for k, v in vae_reads[0].items()}
    assert all(t.data_ptr() == vae_ptrs[k] for k, t in vae.state_dict().items())


def test_config_that_is_not_json_is_an_error_naming_it(checkpoints, tmp_path):
    folder = copy_checkpoint(checkpoints, ("V5.1", "T2V"), "original", tmp_path / "ckpt")
    for sub, load in (("transformer", load_transformer), ("vae", load_vae)):
        config = folder / sub / "config.json"
        config.write_text("{not json", encoding="utf-8")
        with pytest.raises(ValueError, match=rf"^{config} is not valid JSON \(Expecting property .*\): re-download it"):
            load(folder / sub)
        config.write_text("[1, 2]", encoding="utf-8")
        with pytest.raises(ValueError, match=rf"^{config} holds a JSON list, not an object: re-download it"):
            load(folder / sub)


def test_shard_index_that_is_not_json_is_an_error_naming_it(checkpoints, tmp_path):
    folder = write_tiny_transformer(tmp_path / "transformer", config_of(checkpoints, ("V5.1", "T2V")), shards=2)
    (index,) = folder.glob("*.index.json")
    index.write_bytes(b"\xff\xfe binary")
    with pytest.raises(ValueError, match=rf"^{index} is not valid JSON \(.*\): re-download it"):
        load_transformer(folder)
    index.write_text('{"metadata": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{index} has no 'weight_map' of shard files"):
        load_transformer(folder)


@pytest.mark.parametrize("cls", ["EasyAnimateTransformer3DModel", "HunyuanTransformer3DModel"])
def test_original_folder_with_a_model_index_is_still_original(checkpoints, tmp_path, cls):
    """The published original-layout repositories ship a model_index.json too: the layout comes from the
    transformer's own keys, and the original code's transformer class names are accepted."""
    folder = copy_checkpoint(checkpoints, ("V5.1", "InP"), "original", tmp_path / "ckpt")
    (folder / "model_index.json").write_text(json.dumps({"transformer": ["easyanimate", cls]}))
    _, info, _ = load_checkpoint(folder, dtype=FP32, load_text=False)
    assert info.layout == "original" and "(original layout)" in info.summary()
    (folder / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="describes a UNet2DConditionModel, not an EasyAnimate transformer"):
        load_checkpoint(folder, dtype=FP32, load_text=False)


def test_checkpoint_loading_reports_progress_per_shard_and_stops_on_cancel(tmp_path):
    """A host's progress bar follows the transformer's shards, then the VAE and the text encoder; a bar that raises
    (ComfyUI's, on Cancel) stops loading there."""
    folder = write_tiny_checkpoint(tmp_path / "ckpt", shards=3)
    seen = []
    load_checkpoint(folder, dtype=FP32, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    seen.clear()
    load_checkpoint(folder, dtype=FP32, load_text=False, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def cancel_at_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_checkpoint(folder, dtype=FP32, progress=cancel_at_two)


@pytest.mark.parametrize(
    ("version", "extra"),
    [
        ("V4", {"_class_name": "HunyuanTransformer3DModel", "hidden_size": 1408, "n_query": 16, "text_len_t5": 256}),
        ("V1-V3", {"_class_name": "Transformer3DModel", "motion_module_type": "Vanilla", "enable_uvit": True}),
    ],
)
def test_older_easyanimate_versions_are_named_before_the_weights_are_read(
    checkpoints, tmp_path, monkeypatch, version, extra
):
    """A V4 (HunyuanDiT-style) or V1-V3 (motion-module) checkpoint is refused from its config.json alone, saying
    which version it is and which checkpoints to use, before gigabytes of weights are read."""
    folder = copy_checkpoint(checkpoints, ("V5.1", "T2V"), "original", tmp_path / "ckpt")
    cfg_file = folder / "transformer" / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text(encoding="utf-8")), **extra}), encoding="utf-8")

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(loading, "read_folder_weights", no_weights)
    with pytest.raises(ValueError, match=rf"config.json is an EasyAnimate {version} transformer .*EasyAnimateV5.1"):
        load_checkpoint(folder)
    with pytest.raises(ValueError, match=rf"EasyAnimate {version} transformer"):
        TransformerConfig.from_dict(extra)


def test_single_file_of_an_older_version_says_so(tmp_path):
    path = tmp_path / "easyanimate_v4.safetensors"
    save_file({"pos_embed.proj.weight": torch.zeros(8, 4, 2, 2), "blocks.0.attn1.to_q.weight": torch.zeros(8, 8)}, path)
    with pytest.raises(ValueError, match=r"not an EasyAnimate V5/V5.1 transformer .*V1-V4 .*not supported"):
        load_transformer(path)
    plain = tmp_path / "other.safetensors"
    save_file({"x_embedder.weight": torch.zeros(8, 8)}, plain)
    with pytest.raises(ValueError, match=r"no patch embedding 'proj.weight'\)$"):
        load_transformer(plain)
