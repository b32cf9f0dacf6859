"""LoRA: every file format equals weights merged by hand; stacking, strengths, exact removal, fp8, block swap."""

import importlib
import logging
import re
import sys
import types
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from easyanimate_core import lora as L
from easyanimate_core.configs import TransformerConfig
from easyanimate_core.handles import PromptEmbeds, TransformerHandle
from easyanimate_core.keys import transformer_to_diffusers
from easyanimate_core.memory import MemoryPolicy
from easyanimate_core.runner import run_sampler, streamed_layer
from easyanimate_core.sampling import Interrupted
from easyanimate_core.testing.transformer import tiny_transformer_config, tiny_transformer_state_dict
from easyanimate_core.text import TextEmbeds
from easyanimate_core.transformer import EasyAnimateTransformer

CPU = torch.device("cpu")
CFG = tiny_transformer_config(text_dim=32)  # 2 multi-modal blocks, 32 wide, patch 2, 16 latent channels
REPO = Path(__file__).resolve().parent.parent
# Sampled latents reach |x| ~ 10 after two steps, so float32 rounding alone differs by a few 1e-6 there:
# end-to-end runs compare at 1e-5 absolute plus 1e-5 relative; single forwards at 1e-5 absolute.
TOL = dict(atol=1e-5, rtol=1e-5)
# Layers the test LoRAs patch: video and text (attn2) projections, feed-forward, modulation, the conv patch
# embedding and the output head.
TARGETS = (
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.1.attn2.to_k",
    "transformer_blocks.0.attn2.to_out.0",
    "transformer_blocks.1.ff.net.0.proj",
    "transformer_blocks.0.norm1.linear",
    "proj",
    "proj_out",
)


def make_model(sd=None, assign=False) -> EasyAnimateTransformer:
    model = EasyAnimateTransformer(TransformerConfig.from_dict(CFG))
    model.load_state_dict(tiny_transformer_state_dict(CFG) if sd is None else sd, assign=assign)
    return model.eval().requires_grad_(False)  # as the loaders return it


@pytest.fixture(scope="module")
def model():
    return make_model()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bit_identical(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def random_lora(
    model, seed: int, rank: int = 4, targets=TARGETS
) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``{our module name: (down, up, alpha)}``; up is not zero (a trained LoRA, not a fresh one)."""
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    out = {}
    for i, name in enumerate(targets):
        w = modules[name].weight
        if w.ndim == 4:  # Conv2d: down has the layer's kernel, up is 1x1
            down, up = torch.randn(rank, *w.shape[1:], generator=g), torch.randn(w.shape[0], rank, 1, 1, generator=g)
        else:
            down, up = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
        out[name] = (down * 0.3, up * 0.3, float(rank * (0.5 + 0.25 * i)))
    return out


def kohya(lw, alpha=True):
    """As EasyAnimate's LoRANetwork names it: "lora_unet" + "." + "" (the root) + "." + name, dots -> "_"."""
    sd = {}
    for name, (down, up, a) in lw.items():
        base = "lora_unet__" + name.replace(".", "_")
        sd |= {f"{base}.lora_down.weight": down, f"{base}.lora_up.weight": up}
        if alpha:
            sd[f"{base}.alpha"] = torch.tensor(a)
    return sd


def peft(lw, alpha=True):
    """diffusers/PEFT with the ``transformer.`` prefix and diffusers-layout names (attn2 -> attn1.add_*)."""
    renamed = transformer_to_diffusers({f"{name}.weight": name for name in lw})
    sd = {}
    for key, name in renamed.items():
        down, up, a = lw[name]
        base = "transformer." + key.removesuffix(".weight")
        sd |= {f"{base}.lora_A.weight": down, f"{base}.lora_B.weight": up}
        if alpha:
            sd[f"{base}.alpha"] = torch.tensor(a)
    return sd


def comfy(lw, alpha=True):
    sd = {}
    for name, (down, up, a) in lw.items():
        base = "diffusion_model." + name
        sd |= {f"{base}.lora_down.weight": down, f"{base}.lora_up.weight": up}
        if alpha:
            sd[f"{base}.alpha"] = torch.tensor(a)
    return sd


WRITERS = {"kohya": kohya, "peft": peft, "comfy": comfy}


def merged(model, *loras_and_strengths, alpha=True):
    """A copy of ``model`` with ``W + strength * alpha/rank * up @ down`` added by hand for each LoRA."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for lw, strength in loras_and_strengths:
        for name, (down, up, a) in lw.items():
            rank = down.shape[0]
            scale = strength * (a if alpha else rank) / rank
            w = sd[f"{name}.weight"]
            sd[f"{name}.weight"] = w + scale * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    copy = EasyAnimateTransformer(model.config)
    copy.load_state_dict(sd)
    return copy.eval().requires_grad_(False)


def embeds(width: int = 32) -> PromptEmbeds:
    g = torch.Generator().manual_seed(5)
    pos = TextEmbeds(torch.randn(1, 6, width, generator=g), torch.ones(1, 6, dtype=torch.long))
    neg = TextEmbeds(torch.randn(1, 6, width, generator=g), torch.ones(1, 6, dtype=torch.long))
    return PromptEmbeds(pos, neg, kind="qwen2vl")


def run(handle, **kw):
    args = dict(steps=2, cfg=3.0, seed=7, scheduler="Flow", device=CPU, offload=CPU) | kw
    return run_sampler(handle, embeds(), (1, 16, 2, 4, 6), **args)


def plain(model, dtype=torch.float32, **kw):
    return TransformerHandle(model, dtype, **kw)


def save(sd, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_format_equals_weights_merged_by_hand(model, fmt, tmp_path):
    lw = random_lora(model, seed=1)
    lora = L.load_lora(save(WRITERS[fmt](lw), tmp_path / f"{fmt}.safetensors"), model)
    assert set(lora.patches) == set(TARGETS) and lora.unmatched == ()
    before = snapshot(model)
    got = run(L.with_lora(plain(model), lora, 0.8))
    assert_bit_identical(model, before)
    assert L.attached(model) == {}
    expected = run(plain(merged(model, (lw, 0.8))))
    assert (expected - run(plain(model))).abs().max() > 0.05  # the LoRA changes the result
    torch.testing.assert_close(got, expected, **TOL)


def test_single_forward_equals_merged_weights(model):
    lw = random_lora(model, seed=13)
    lora = L.parse_lora(peft(lw), model)
    g = torch.Generator().manual_seed(0)
    x, txt = torch.randn(2, 16, 2, 4, 6, generator=g), torch.randn(2, 5, 32, generator=g)
    t = torch.tensor([900.0, 250.0])
    with L.applied(model, ((lora, 1.2),), CPU, torch.float32):
        assert len(L.attached(model)) == len(TARGETS)
        got = model(x, t, txt)
    expected = merged(model, (lw, 1.2))(x, t, txt)
    assert L.attached(model) == {}
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_alpha_defaults_to_rank_and_pickles_load(model, tmp_path):
    lw = random_lora(model, seed=2, rank=3)
    path = tmp_path / "no_alpha.pt"
    torch.save(peft(lw, alpha=False), path)
    lora = L.load_lora(path, model)
    assert all(p.alpha == 3.0 for p in lora.patches.values())
    torch.testing.assert_close(
        run(L.with_lora(plain(model), lora, 1.0)), run(plain(merged(model, (lw, 1.0), alpha=False))), **TOL
    )


def test_stacked_loras_equal_their_merged_sum(model):
    a, b = random_lora(model, seed=3), random_lora(model, seed=4, rank=2, targets=TARGETS[1:4] + ("proj",))
    handle = L.with_lora(
        L.with_lora(plain(model), L.parse_lora(kohya(a), model), 0.7), L.parse_lora(comfy(b), model), 1.3
    )
    assert len(handle.loras) == 2
    torch.testing.assert_close(run(handle), run(plain(merged(model, (a, 0.7), (b, 1.3)))), **TOL)


def test_strength_zero_is_exactly_no_lora(model):
    lora = L.parse_lora(kohya(random_lora(model, seed=5)), model)
    base = plain(model)
    assert L.with_lora(base, lora, 0.0) is base
    assert torch.equal(run(base.replace(loras=((lora, 0.0),))), run(base))
    for strength in (float("nan"), float("inf")):  # a linked number bypasses the widget's range
        with pytest.raises(ValueError, match="strength must be a finite number"):
            L.with_lora(base, lora, strength)


def test_negative_strength_equals_negative_merge(model):
    lw = random_lora(model, seed=6)
    handle = L.with_lora(plain(model), L.parse_lora(peft(lw), model), -1.5)
    torch.testing.assert_close(run(handle), run(plain(merged(model, (lw, -1.5)))), **TOL)


def test_block_swap_runs_the_branches_through_functional_call(model):
    lw = random_lora(model, seed=7, targets=TARGETS[:5])  # all inside the streamed blocks
    lora = L.parse_lora(kohya(lw), model)
    handle = L.with_lora(plain(model, memory=MemoryPolicy("block_swap", resident_blocks=0)), lora, 1.0)
    before = snapshot(model)
    got = run(handle)  # BlockStreamer on the CPU: every block runs from copies via functional_call
    assert_bit_identical(model, before)
    torch.testing.assert_close(got, run(plain(merged(model, (lw, 1.0)))), **TOL)


def test_block_swap_leaves_streamed_blocks_branches_on_the_store(model):
    """Streamed blocks' branches wait on the offload device and travel with the block's call; resident layers'
    branches go to the compute device for the run (the meta device stands in for CUDA)."""
    lora = L.parse_lora(kohya(random_lora(model, seed=12, targets=TARGETS)), model)
    handle = L.with_lora(plain(model, memory=MemoryPolicy("block_swap", resident_blocks=1)), lora, 1.0)
    meta = torch.device("meta")
    with L.applied(model, handle.loras, meta, torch.float32, store=CPU, streamed=streamed_layer(handle)):
        devices = {
            name: m.lora_branches[0][0].device.type for name, m in L.lora_targets(model).items() if m.lora_branches
        }
    assert devices == {
        "transformer_blocks.0.attn1.to_q": "meta",  # block 0 is resident
        "transformer_blocks.0.attn2.to_out.0": "meta",
        "transformer_blocks.0.norm1.linear": "meta",
        "transformer_blocks.1.attn2.to_k": "cpu",  # block 1 is streamed
        "transformer_blocks.1.ff.net.0.proj": "cpu",
        "proj": "meta",
        "proj_out": "meta",
    }
    assert L.attached(model) == {}


def test_interrupt_and_errors_leave_weights_and_no_branches(model):
    lora = L.parse_lora(kohya(random_lora(model, seed=8)), model)
    handle = L.with_lora(plain(model), lora, 1.0)
    before = snapshot(model)
    calls = []

    def stop_at_second_step():
        calls.append(1)
        assert L.attached(model)  # attached while sampling
        return len(calls) > 1

    with pytest.raises(Interrupted):
        run(handle, should_stop=stop_at_second_step)
    assert L.attached(model) == {}
    assert_bit_identical(model, before)

    def boom(module, args):
        raise RuntimeError("boom inside the forward")

    hook = model.transformer_blocks[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run(handle)
    finally:
        hook.remove()
    assert L.attached(model) == {}
    assert_bit_identical(model, before)


def test_fp8_weights_with_lora(model):
    """Block matrices stored as fp8 e4m3fn (3 mantissa bits), computed in bf16 with the LoRA branch in bf16,
    against the float32 weights merged by hand and computed in bf16: within 10% relative L2, while the
    LoRA itself moves the result by more than that."""
    lw = random_lora(model, seed=9)
    sd8 = {
        k: v.to(torch.float8_e4m3fn) if k.startswith("transformer_blocks.") and v.ndim == 2 else v
        for k, v in model.state_dict().items()
    }
    fp8 = make_model(sd8, assign=True)
    assert fp8.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    before = snapshot(fp8)
    lora = L.parse_lora(kohya(lw), fp8)
    got = run(L.with_lora(plain(fp8, torch.bfloat16, memory=MemoryPolicy("fp8")), lora, 1.0))
    assert_bit_identical(fp8, before)
    ref = run(plain(merged(model, (lw, 1.0)), torch.bfloat16))
    without = run(plain(model, torch.bfloat16))

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    assert rel(got, ref) < 0.10 < rel(without, ref)


def test_unmatched_keys_are_reported_by_name(model, caplog):
    sd = kohya(random_lora(model, seed=10, targets=TARGETS[:2]))
    sd["lora_unet__transformer_blocks_0_attn_temporal_to_q.lora_down.weight"] = torch.zeros(4, 32)
    sd["lora_te1_encoder_layer_0_q.lora_up.weight"] = torch.zeros(32, 4)
    with caplog.at_level(logging.WARNING, logger="EasyAnimate"):
        lora = L.parse_lora(sd, model, "mixed")
    assert set(lora.patches) == set(TARGETS[:2])
    assert set(lora.unmatched) == {
        "lora_unet__transformer_blocks_0_attn_temporal_to_q.lora_down.weight",
        "lora_te1_encoder_layer_0_q.lora_up.weight",
    }
    assert "lora_unet__transformer_blocks_0_attn_temporal_to_q.lora_down.weight" in caplog.text
    assert "text-encoder" in caplog.text


def test_wrong_width_names_layer_and_shapes(model):
    sd = {
        "lora_unet__transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 64),
        "lora_unet__transformer_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(64, 4),
    }
    with pytest.raises(ValueError, match=r"'transformer_blocks.0.attn1.to_q' has weight \[32, 32\].*down \[4, 64\]"):
        L.parse_lora(sd, model, "wide")


def test_other_architecture_is_rejected(model):
    sd = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
    }
    with pytest.raises(ValueError, match="matches no layer of this EasyAnimate transformer"):
        L.parse_lora(sd, model, "sdxl")
    with pytest.raises(ValueError, match="not both the down and up"):
        L.parse_lora({"transformer.proj_out.lora_A.weight": torch.zeros(4, 32)}, model)


def test_consecutive_runs_reuse_prepared_tensors(model):
    lora = L.parse_lora(kohya(random_lora(model, seed=11)), model)
    handle = L.with_lora(plain(model), lora, 1.0)
    first = run(handle)
    prepared = lora.prepared(CPU, torch.float32)
    assert torch.equal(run(handle), first)
    assert torch.equal(run(L.with_lora(plain(model), lora, 0.5).replace(loras=((lora, 1.0),)), seed=7), first)
    assert lora.conversions == 1 and lora.prepared(CPU, torch.float32) is prepared
    run(L.with_lora(plain(model, torch.bfloat16), lora, 1.0))
    assert lora.conversions == 2
    for dtype in (torch.float16, torch.float64, torch.bfloat16):  # bounded: the two most recent stay
        lora.prepared(CPU, dtype)
    assert lora.conversions == 5 and len(lora._prepared) == lora.max_prepared == 2


def _import_pack():
    """The repository as a package under a fresh name, as ComfyUI imports a custom-node folder."""
    name = f"ea_pack_{uuid.uuid4().hex}"
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(REPO)]
    sys.modules[name] = pkg
    return name, importlib.import_module(f"{name}.nodes.lora")


def test_node_loads_stacks_and_caches(model, tmp_path, monkeypatch):
    monkeypatch.setenv("EASYANIMATE_MODELS_DIR", str(tmp_path))
    (tmp_path / "loras").mkdir()
    lw = random_lora(model, seed=12)
    save(comfy(lw), tmp_path / "loras" / "style.safetensors")
    name, mod = _import_pack()
    try:
        cls = mod.NODE_CLASS_MAPPINGS["EasyAnimateLoraLoader"]
        assert mod.NODE_DISPLAY_NAME_MAPPINGS["EasyAnimateLoraLoader"] == "Load EasyAnimate LoRA"
        required = cls.INPUT_TYPES()["required"]
        assert required["lora_name"][0] == ["style.safetensors"]
        assert required["strength"][1]["default"] == 1.0 and required["strength"][1]["min"] == -10.0
        assert all("tooltip" in opts for _, opts in required.values())
        assert cls.CATEGORY == "EasyAnimate/loaders" and cls.DESCRIPTION and cls.OUTPUT_TOOLTIPS
        node, base = cls(), plain(model)
        (one,) = node.load(base, "style.safetensors", 0.5)
        (two,) = node.load(one, "style.safetensors", 0.25)
        assert base.loras == () and len(two.loras) == 2 and two.loras[0][0] is two.loras[1][0]  # read once
        assert node.load(base, "style.safetensors", 0.0)[0] is base
        torch.testing.assert_close(run(two), run(plain(merged(model, (lw, 0.75)))), **TOL)
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


@pytest.mark.parametrize(
    "key, target",
    [
        ("lora_unet__transformer_blocks_0_attn1_to_q.lora_down.weight", "transformer_blocks.0.attn1.to_q"),
        ("lora_unet_transformer_blocks_1_ff_net_2.lora_up.weight", "transformer_blocks.1.ff.net.2"),
        ("lora_unet_transformer_blocks_1_attn1_add_k_proj.alpha", "transformer_blocks.1.attn2.to_k"),
        ("lora_unet_transformer_blocks_0_attn1_to_add_out.lora_up.weight", "transformer_blocks.0.attn2.to_out.0"),
        ("transformer.transformer_blocks.0.attn1.add_q_proj.lora_A.weight", "transformer_blocks.0.attn2.to_q"),
        (
            "base_model.model.transformer_blocks.0.txt_ff.net.0.proj.lora_B.default.weight",
            "transformer_blocks.0.txt_ff.net.0.proj",
        ),
        ("diffusion_model.transformer_blocks.1.attn2.to_v.lora_down.weight", "transformer_blocks.1.attn2.to_v"),
        ("model.diffusion_model.text_proj.1.lora.up.weight", "text_proj.1"),
        ("transformer_blocks.0.norm2.linear.lora_A.weight", "transformer_blocks.0.norm2.linear"),
        ("lora_unet__proj.lora_down.weight", "proj"),
    ],
)
def test_key_rules(model, key, target):
    """Prefix (kohya, PEFT, ComfyUI, none), then our or diffusers' module name, dotted or flattened."""
    m = L._KEY.match(key)
    alias = L._TRANSFORMER_PREFIX.sub("", m["module"], count=1)
    assert L.module_aliases(model)[alias] == target


@pytest.mark.parametrize("writer", ["kohya", "peft"])
def test_lora_for_a_deeper_model_is_refused(model, writer):
    sd = WRITERS[writer](random_lora(model, seed=12, targets=TARGETS[:2]))
    down, up = torch.zeros(4, 32), torch.zeros(32, 4)
    for block in (2, 3):  # blocks this 2-block model does not have
        if writer == "kohya":
            base = f"lora_unet__transformer_blocks_{block}_attn1_to_q"
            sd |= {f"{base}.lora_down.weight": down, f"{base}.lora_up.weight": up}
        else:
            base = f"transformer.transformer_blocks.{block}.attn1.to_q"
            sd |= {f"{base}.lora_A.weight": down, f"{base}.lora_B.weight": up}
    message = "the LoRA targets 4 transformer blocks but this model has 2: it was made for another model size"
    with pytest.raises(ValueError, match=message):
        L.parse_lora(sd, model, "deeper")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_lora_file_is_an_error_naming_it(model, tmp_path, damage):
    path = save(kohya(random_lora(model, seed=13)), tmp_path / "broken.safetensors")
    data = path.read_bytes()
    path.write_bytes(b"garbage" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"cannot read weights file {path}: it is truncated, corrupt"):
        L.load_lora(path, model)


def test_strength_changes_do_not_recompile_compiled_blocks(model):
    """The strength rides in a scaled copy of ``up``, not as a Python number in the layer's code (torch.compile
    guards on those: each new strength would recompile every block, and past dynamo's recompile limit compiling
    would silently stop). Outputs still follow the strength."""
    import torch._dynamo.utils as dynamo_utils

    lora = L.parse_lora(kohya(random_lora(model, seed=12)), model)
    compiled = plain(model).replace(compile="eager", compiled={})
    outputs = {s: run(L.with_lora(compiled, lora, s)) for s in (0.3, 0.5)}  # compiles every block once
    frames = dynamo_utils.counters["frames"]["total"]
    for s in (0.7, 0.9, 1.1):
        outputs[s] = run(L.with_lora(compiled, lora, s))
    assert dynamo_utils.counters["frames"]["total"] == frames  # no block traced again
    eager = {s: run(L.with_lora(plain(model), lora, s)) for s in outputs}
    for s, out in outputs.items():
        torch.testing.assert_close(out, eager[s], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(outputs[0.3], outputs[1.1], atol=1e-3)


def version_model(version: str, num_layers: int = 2, mmdit_layers: int = 2) -> EasyAnimateTransformer:
    """A tiny V5.1 or V5 (with its T5 projection) model; ``mmdit_layers < num_layers`` makes the later blocks
    single-stream, as in the V5.1 7B (36 blocks, 18 multi-modal) against the 12B (48, all multi-modal)."""
    cfg = tiny_transformer_config(version=version, text_dim=32, text_dim_t5=48 if version == "V5" else None)
    cfg |= dict(num_layers=num_layers, mmdit_layers=mmdit_layers)
    model = EasyAnimateTransformer(TransformerConfig.from_dict(cfg))
    model.load_state_dict(tiny_transformer_state_dict(cfg))
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("version", ["V5.1", "V5"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn])
def test_every_layer_in_every_format_and_file_dtype(version, dtype):
    """EasyAnimate's trainer patches every Linear of the transformer (time embedding, text projections, the
    modulation linears, the output head) plus what a LoCon adds (the patch-embedding conv): each format reaches
    each layer and equals the file's own (rounded) tensors merged by hand."""
    model = version_model(version)
    names = tuple(L.lora_targets(model))
    assert {"time_embedding.linear_1", "proj", "norm_out.linear", "proj_out"} <= set(names)
    assert ("text_proj_t5" in names) == (version == "V5") and ("text_proj.1" in names) == (version == "V5.1")
    lw = {n: (d.to(dtype), u.to(dtype), a) for n, (d, u, a) in random_lora(model, seed=21, targets=names).items()}
    # alpha is stored in the weights' dtype below (as EasyAnimate's save_weights does), so it rounds too
    rounded = {n: (d.float(), u.float(), torch.tensor(a).to(dtype).item()) for n, (d, u, a) in lw.items()}
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(2, 16, 2, 4, 6, generator=g),
        torch.tensor([900.0, 250.0]),
        torch.randn(2, 5, 32, generator=g),
    )
    inputs += (torch.randn(2, 3, 48, generator=g),) if version == "V5" else ()
    expected = merged(model, (rounded, 0.7))(*inputs)
    assert (expected - model(*inputs)).abs().max() > 1.0
    for fmt, writer in WRITERS.items():
        sd = writer(lw)
        sd = {k: v.to(dtype) if k.endswith(".alpha") else v for k, v in sd.items()}
        lora = L.parse_lora(sd, model, fmt)
        assert set(lora.patches) == set(names) and lora.unmatched == ()
        with L.applied(model, ((lora, 0.7),), CPU, torch.float32):
            got = model(*inputs)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # the LoRA moves it by > 1


@pytest.mark.parametrize(
    "key, kind",
    [
        ("lora_unet__transformer_blocks_0_attn1_to_q.dora_scale", "DoRA"),  # kohya / LyCORIS / ComfyUI
        ("transformer.transformer_blocks.0.attn1.to_q.lora_magnitude_vector", "DoRA"),  # PEFT
        ("diffusion_model.transformer_blocks.0.attn1.to_q.lora_magnitude_vector.weight", "DoRA"),
        ("lora_unet__transformer_blocks_0_attn1_to_k.hada_w1_a", "LoHa"),
        ("lora_unet__transformer_blocks_0_attn1_to_k.lokr_w1", "LoKr"),
        ("lora_unet__proj.lora_mid.weight", "Tucker"),
        ("diffusion_model.transformer_blocks.0.norm1.linear.diff_b", "bias difference"),
        ("diffusion_model.transformer_blocks.0.attn1.norm_q.diff", "weight or bias difference"),
        ("transformer.transformer_blocks.0.attn1.to_v.lora_B.bias", "LoRA with biases"),
        ("lora_unet__transformer_blocks_0_attn1_to_v.oft_blocks", "OFT"),
    ],
)
def test_other_adapter_kinds_are_refused_not_half_applied(model, key, kind):
    """Applying only the plain down/up pairs of such a file, or skipping it with a warning, gives another video
    than the trainer's: an error naming the kind and the key."""
    sd = kohya(random_lora(model, seed=22, targets=TARGETS[:2]))
    sd[key] = torch.ones(32, 1)
    with pytest.raises(ValueError, match=rf"LoRA 'x' has .*{kind}.* weights \('{re.escape(key)}'\)"):
        L.parse_lora(sd, model, "x")


@pytest.mark.parametrize("writer", ["kohya", "peft", "comfy"])
@pytest.mark.parametrize("made_for, used_on", [("V5", "V5.1"), ("V5.1", "V5")])
def test_lora_for_the_other_version_is_refused(writer, made_for, used_on):
    """As EasyAnimate's trainer writes them, a V5 LoRA has text_proj and text_proj_t5 and a V5.1 LoRA text_proj.1;
    the blocks have the same shapes, so without this check the LoRA would apply in part, with a warning."""
    source, target = version_model(made_for), version_model(used_on)
    sd = WRITERS[writer](random_lora(source, seed=23, targets=tuple(L.lora_targets(source))))
    with pytest.raises(ValueError, match=r"patches the text projection .* made for another EasyAnimate version"):
        L.parse_lora(sd, target, "other")


def test_lora_for_the_other_size_is_refused_and_single_stream_blocks_load():
    """The V5.1 7B and 12B are equally wide; the 7B's later blocks are single-stream (no attn2, txt_ff). Tiny
    stand-ins: 4 blocks, 2 of them multi-modal ("7B") against 4 multi-modal ("12B")."""
    small, large = version_model("V5.1", 4, 2), version_model("V5.1", 4, 4)
    for writer in WRITERS.values():
        sd = writer(random_lora(small, seed=24, targets=tuple(L.lora_targets(small))))
        assert len(L.parse_lora(sd, small).patches) == len(L.lora_targets(small))
        with pytest.raises(ValueError, match=r"of none of blocks 2-3, which are multi-modal in this model"):
            L.parse_lora(sd, large, "7b")
        sd = writer(random_lora(large, seed=25, targets=tuple(L.lora_targets(large))))
        with pytest.raises(ValueError, match=r"patches the text stream of transformer block [23] .* single-stream"):
            L.parse_lora(sd, small, "12b")
    # a LoRA of the video stream only, or of some blocks only, is not mistaken for another size
    video_only = [n for n in L.lora_targets(large) if ".attn1." in n]
    assert len(L.parse_lora(kohya(random_lora(large, seed=26, targets=video_only)), large).patches) == 16
    lw = random_lora(small, seed=27, targets=tuple(L.lora_targets(small)))
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 16, 2, 4, 6, generator=g), torch.tensor([500.0]), torch.randn(1, 5, 32, generator=g))
    with L.applied(small, ((L.parse_lora(kohya(lw), small), 1.0),), CPU, torch.float32):
        got = small(*inputs)
    torch.testing.assert_close(got, merged(small, (lw, 1.0))(*inputs), atol=1e-4, rtol=0)


def test_peft_scaling_from_diffusers_metadata_and_adapter_config(model, tmp_path):
    """A PEFT LoRA has no alpha tensors: its scale is lora_alpha / r from its LoraConfig, which diffusers'
    save_lora_weights keeps in the safetensors metadata and PEFT's save_pretrained in adapter_config.json. Read as
    scale 1 it came out 2x too strong at lora_alpha = r / 2 (or any other ratio)."""
    import json

    lw = random_lora(model, seed=6, rank=4)
    sd = peft(lw, alpha=False)
    q = "transformer_blocks.0.attn1.to_q"  # named by alpha_pattern: its own alpha
    config = {"r": 4, "lora_alpha": 2, "alpha_pattern": {"attn1.to_q": 12}, "use_rslora": False}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps({f"transformer.{k}": v for k, v in config.items()})}
    path = tmp_path / "diffusers_lora.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    lora = L.load_lora(path, model)
    assert {n: p.alpha for n, p in lora.patches.items()} == {n: 12.0 if n == q else 2.0 for n in lw}
    expected = {n: (down, up, 12.0 if n == q else 2.0) for n, (down, up, _) in lw.items()}
    torch.testing.assert_close(
        run(L.with_lora(plain(model), lora, 1.0)), run(plain(merged(model, (expected, 1.0)))), **TOL
    )
    # PEFT's folder: adapter_model.safetensors + adapter_config.json; rsLoRA scales by alpha / sqrt(r)
    folder = tmp_path / "peft_adapter"
    folder.mkdir()
    save(sd, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8, "use_rslora": True}))
    rs = L.load_lora(folder / "adapter_model.safetensors", model)
    assert all(p.scale == pytest.approx(8 / 4**0.5) for p in rs.patches.values())
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="'adapter_model.safetensors': its PEFT adapter config cannot be read"):
        L.load_lora(folder / "adapter_model.safetensors", model)
    save(sd, folder / "other_lora.safetensors")  # another LoRA in that folder is not PEFT's adapter: scale 1
    assert all(p.scale == 1.0 for p in L.load_lora(folder / "other_lora.safetensors", model).patches.values())
    # alpha tensors in the file win over a config (kohya files carry them per layer)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    save(peft(lw), folder / "adapter_model.safetensors")
    assert {n: p.alpha for n, p in L.load_lora(folder / "adapter_model.safetensors", model).patches.items()} == {
        n: a for n, (_, _, a) in lw.items()
    }
