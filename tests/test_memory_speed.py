"""Memory modes, TeaCache and attention backends: each gives the output of the plain run (or a stated tolerance)."""

import sys

import numpy as np
import pytest
import torch

from easyanimate_core.attention import attention, available_backends, check_backend
from easyanimate_core.loading import load_transformer
from easyanimate_core.memory import MemoryPolicy, on_device, transformer_placement
from easyanimate_core.sampling import Interrupted, initial_noise, sample
from easyanimate_core.schedulers import build_scheduler
from easyanimate_core.teacache import COEFFICIENTS, TeaCache, coefficients_for
from easyanimate_core.testing import TINY_SCHEDULERS
from easyanimate_core.testing.transformer import tiny_transformer_config, write_tiny_transformer
from easyanimate_core.text import TextEmbeds

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    cfg = tiny_transformer_config(text_dim=32)
    cfg["num_layers"] = 4
    return write_tiny_transformer(tmp_path_factory.mktemp("tr") / "transformer", cfg)


@pytest.fixture(scope="module")
def model(folder):
    return load_transformer(folder, dtype=torch.float32)[0]


def text(seed: int) -> TextEmbeds:
    g = torch.Generator().manual_seed(seed)
    return TextEmbeds(torch.randn(1, 6, 32, generator=g), torch.ones(1, 6, dtype=torch.long))


def run(model, policy=MemoryPolicy(), steps=6, cfg=4.0, **kw):
    noise, gen = initial_noise((1, 16, 3, 6, 8), 11)
    with transformer_placement(model, CPU, CPU, policy) as run_blocks:
        return sample(
            model, build_scheduler("Flow", None), text(1), text(2), noise, steps=steps, cfg=cfg,
            generator=gen, run_blocks=run_blocks, **kw,
        )  # fmt: skip


@pytest.mark.parametrize(
    "policy", [MemoryPolicy("model_offload")] + [MemoryPolicy("block_swap", n) for n in (0, 1, 3, 9)]
)
def test_placement_modes_equal_none(model, policy):
    assert torch.equal(run(model, policy), run(model))


def test_block_swap_with_every_block_resident_warns(model, caplog):
    """It runs as memory mode none (nothing streamed), which a user choosing block swap did not mean."""
    with caplog.at_level("WARNING", logger="EasyAnimate"):
        run(model, MemoryPolicy("block_swap", 3), steps=1)
    assert not caplog.records
    with caplog.at_level("WARNING", logger="EasyAnimate"):
        run(model, MemoryPolicy("block_swap", 9), steps=1)
    assert "block swap with 9 resident blocks keeps all 4 of this model's blocks" in caplog.text


def test_block_swap_interrupted_leaves_the_model_unchanged(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = []
    with pytest.raises(Interrupted):
        run(
            model,
            MemoryPolicy("block_swap", 1),
            progress=lambda i, n, x: steps.append(i),
            should_stop=lambda: len(steps) == 2,
        )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(run(model, MemoryPolicy("block_swap", 1)), run(model))


@pytest.mark.parametrize("policy,failing", [(MemoryPolicy("model_offload"), None), (MemoryPolicy("block_swap", 3), 2)])
def test_placement_cut_short_by_out_of_memory_sends_back_every_part(model, monkeypatch, policy, failing):
    """A move that runs out of device memory halfway (the blocks' list, or the third resident block) leaves what it
    copied on the GPU: every part whose move began returns to the offload device. The CPU has no second device, so
    the moves are recorded instead of made."""
    gpu, where = torch.device("cuda", 0), {}
    stuck = model.transformer_blocks if failing is None else model.transformer_blocks[failing]

    def to(module, device):
        where[module] = torch.device(device)
        if module is stuck and where[module] == gpu:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return module

    monkeypatch.setattr(torch.nn.Module, "to", to)
    with pytest.raises(torch.OutOfMemoryError), transformer_placement(model, gpu, CPU, policy):
        pass
    assert stuck in where and set(where.values()) == {CPU}


def test_a_half_placed_module_is_placed_whole():
    """A child whose move stopped halfway (memory mode none keeps what was moved) is completed by the next run, not
    taken as placed because its first weight is there (the meta device stands in for the GPU)."""
    module = torch.nn.Sequential(torch.nn.Linear(4, 4))
    module[0].weight = torch.nn.Parameter(module[0].weight.to("meta"))
    with on_device(module, torch.device("meta"), CPU, MemoryPolicy()):
        assert {p.device.type for p in module.parameters()} == {"meta"}


def test_fp8_weights_within_tolerance(folder, model):
    """fp8 e4m3fn keeps 3 mantissa bits (relative rounding error up to 1/16 per weight); over 4 blocks the
    output stays within 10% relative L2 of the float32 run. Norms, biases and embeddings stay float32."""
    fp8 = load_transformer(folder, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)[0]
    assert fp8.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert fp8.transformer_blocks[0].attn1.to_q.bias.dtype == torch.float32
    assert fp8.transformer_blocks[0].norm1.norm.weight.dtype == torch.float32
    assert fp8.proj.weight.dtype == torch.float32
    ref, got = run(model, steps=3), run(fp8, steps=3)
    rel = ((got - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.10


def test_teacache_threshold_zero_is_identical_and_reports(model):
    stats = {}
    assert torch.equal(run(model, teacache=0.0, stats=stats), run(model))
    assert stats == {"teacache_skipped": 0, "transformer_calls": 6}


def test_teacache_skips_middle_steps_and_resets_every_run(model):
    stats = {}
    cached = run(model, teacache=100.0, stats=stats)
    assert stats["teacache_skipped"] == 4  # the first and last steps always compute
    assert torch.isfinite(cached).all() and not torch.equal(cached, run(model))
    assert torch.equal(cached, run(model, teacache=100.0))  # fresh state: the same again
    assert torch.equal(run(model), run(model, teacache=0.0))  # off after on: plain output


def test_teacache_defaults_to_the_official_threshold_everywhere():
    import inspect

    from easyanimate_core.__main__ import build_parser
    from easyanimate_core.pipeline import generate

    args = build_parser().parse_args(["generate", "--model", "m", "--prompt", "p", "--out", "o.mp4"])
    assert args.teacache == 0.08  # predict_t2v/i2v/v2v(_control).py: enable_teacache, teacache_threshold = 0.08
    assert inspect.signature(generate).parameters["teacache"].default == 0.08  # the nodes': tests/test_nodes.py


def test_teacache_runs_on_v5_1_models_only(model, tmp_path):
    """EasyAnimate's get_teacache_coefficients knows V5.1 7B/12B only, so its scripts run V5 without TeaCache."""
    assert coefficients_for(model) == COEFFICIENTS["7b"]
    cfg = tiny_transformer_config(version="V5", text_dim=32, text_dim_t5=24)
    v5 = load_transformer(write_tiny_transformer(tmp_path / "v5", cfg), dtype=torch.float32)[0]
    assert v5.config.version == "V5" and coefficients_for(v5) is None

    def run_v5(**kw):
        noise, gen = initial_noise((1, 16, 3, 6, 8), 11)
        t5 = [torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(s)) for s in (3, 4)]
        pos, neg = (
            TextEmbeds(e.embeds, e.mask, t, torch.ones(1, 5, dtype=torch.long)) for e, t in zip((text(1), text(2)), t5)
        )
        return sample(
            v5,
            build_scheduler("DDIM", TINY_SCHEDULERS["V5"], version="V5"),
            pos,
            neg,
            noise,
            steps=6,
            cfg=4.0,
            generator=gen,
            **kw,
        )

    stats = {}
    assert torch.equal(run_v5(teacache=100.0, stats=stats), run_v5())  # every step computed
    assert stats["teacache_skipped"] == 0 and stats["teacache_note"].startswith("TeaCache is calibrated for V5.1 only")
    stats = {}
    run(model, teacache=100.0, stats=stats)
    assert stats["teacache_skipped"] == 4 and "teacache_note" not in stats


def test_teacache_polynomial_and_decisions():
    cache = TeaCache(threshold=0.5, num_steps=5, coefficients=COEFFICIENTS["7b"])
    assert cache._rescale(0.3) == pytest.approx(np.poly1d(COEFFICIENTS["7b"])(0.3))
    x = torch.ones(4)
    decisions = []
    cache.residual = torch.zeros(4)
    for scale in (1.0, 1.01, 1.02, 1.5, 1.5):
        decisions.append(cache.should_compute(x * scale))
    # step 0 computes; small changes accumulate under 0.5 and skip; a jump recomputes; the last step computes
    assert decisions == [True, False, False, True, True]
    with pytest.raises(ValueError):
        TeaCache(threshold=-1, num_steps=3, coefficients=(1.0,))


def test_attention_backends():
    assert "sdpa" in available_backends()
    q = torch.randn(1, 2, 5, 8)
    assert attention(q, q, q, "sdpa").shape == (1, 5, 16)
    with pytest.raises(ValueError, match="unknown attention backend"):
        check_backend("xformers2")
    for name in ("flash", "flash3", "sage"):
        if name not in available_backends():
            with pytest.raises(ValueError, match="not installed"):
                check_backend(name)


def fake_attention_packages(monkeypatch, calls: list) -> None:
    """Stand-ins for flash-attn 2, FlashAttention 3 and SageAttention with their real calling conventions
    (flash: [B, L, H, D] in and out; FA3 releases that also return the LSE; sage: tensor_layout="HND"),
    computing with SDPA, so the backends' layout handling is checked against sdpa itself."""
    import types

    def blhd(q, k, v, **kw):
        assert not kw.get("causal", False)
        calls.append(q.shape)
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)

    def hnd(q, k, v, tensor_layout="NHD", is_causal=False):
        assert tensor_layout == "HND" and not is_causal
        calls.append(q.shape)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    modules = {
        "flash_attn": types.SimpleNamespace(flash_attn_func=blhd),
        "flash_attn_interface": types.SimpleNamespace(flash_attn_func=lambda *a, **kw: (blhd(*a, **kw), None)),
        "sageattention": types.SimpleNamespace(sageattn=hnd),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("backend", ["flash", "flash3", "sage"])
def test_optional_backends_equal_sdpa(monkeypatch, backend):
    calls = []
    fake_attention_packages(monkeypatch, calls)
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))  # [B, H, L, D]
    torch.testing.assert_close(attention(q, k, v, backend), attention(q, k, v, "sdpa"))
    expected = (2, 3, 7, 8) if backend == "sage" else (2, 7, 3, 8)  # the layout each package is called with
    assert calls == [expected]


def run_handle(handle, **kw):
    from easyanimate_core.handles import PromptEmbeds
    from easyanimate_core.runner import run_sampler

    embeds = PromptEmbeds(text(1), text(2), "qwen2vl")
    return run_sampler(
        handle, embeds, (1, 16, 2, 4, 4), steps=2, cfg=4.0, seed=5, scheduler="Flow", device=CPU, offload=CPU, **kw
    )


def test_compiled_blocks_equal_eager_and_are_reused(model):
    from easyanimate_core.handles import TransformerHandle

    plain = TransformerHandle(model, torch.float32)
    compiled = plain.replace(compile="eager", compiled={})  # dynamo traces the blocks; "eager" skips codegen
    assert torch.allclose(run_handle(compiled), run_handle(plain), atol=1e-6)
    assert sorted(compiled.compiled) == [0, 1, 2, 3] and plain.compiled == {}
    first = dict(compiled.compiled)
    run_handle(compiled)
    assert all(compiled.compiled[i] is first[i] for i in first)  # reused, not recompiled from scratch


def test_compile_with_block_swap_is_a_clear_error(model):
    from easyanimate_core.handles import TransformerHandle

    handle = TransformerHandle(model, torch.float32, MemoryPolicy("block_swap", 1), compile="inductor")
    with pytest.raises(ValueError, match="block swap"):
        run_handle(handle)


def test_runner_teacache_reports_skips(model):
    from easyanimate_core.handles import TransformerHandle

    stats = {}
    run_handle(TransformerHandle(model, torch.float32), teacache=0.0, stats=stats)
    assert stats == {"teacache_skipped": 0, "transformer_calls": 2}


def test_fp8_linear_is_rowwise_scaled_fp8_gemm():
    """``ops.fp8_linear`` equals the GEMM of the row-quantised input and the stored weights (exactly the maths,
    up to float32 summation order) and stays within e4m3's rounding (1/16 relative per value) of the
    dequantised layer. Output shape, dtype and bias follow the input."""
    from easyanimate_core import ops

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 64, generator=g) * torch.logspace(-3, 2, 5).view(1, 5, 1)  # rows of very different size
    w8 = (torch.randn(48, 64, generator=g) * 0.05).to(ops.FP8)
    b = torch.randn(48, generator=g)
    got = ops.fp8_linear(x, w8, b)
    assert got.shape == (2, 5, 48) and got.dtype == torch.float32
    rows = x.reshape(-1, 64)
    scale = rows.abs().amax(1, keepdim=True) / 448
    manual = ((rows / scale).to(ops.FP8).float() * scale) @ w8.float().t() + b
    assert ((got.reshape(-1, 48) - manual).norm(dim=1) / manual.norm(dim=1)).max() < 1e-5
    exact = torch.nn.functional.linear(x, w8.float(), b)
    per_row = (got - exact).norm(dim=-1) / (exact - b).norm(dim=-1)
    assert 0 < per_row.max() < 1 / 16  # each row scaled on its own: small rows as exact as large ones
    assert ops.fp8_linear(x.bfloat16(), w8, b.bfloat16()).dtype == torch.bfloat16
    # one scale for the whole tensor (Ada GPUs): exact maths again, but the small rows lose precision
    whole = ops.fp8_linear(x, w8, b, rowwise=False).reshape(-1, 48)
    scale = rows.abs().amax() / 448
    manual = ((rows / scale).to(ops.FP8).float() * scale) @ w8.float().t() + b
    assert ((whole - manual).norm(dim=1) / manual.norm(dim=1)).max() < 1e-5
    coarse = (whole - exact.reshape(-1, 48)).norm(dim=-1) / (exact - b).reshape(-1, 48).norm(dim=-1)
    assert coarse[:5].max() > 10 * per_row.reshape(-1)[:5].max()  # the 1e-3 rows, quantised at the 1e2 rows' scale
    assert ops.rowwise_fp8(CPU)


def test_fp8_matmul_sampler_within_tolerance_and_model_unchanged(folder, model):
    """fp8 GEMMs also round the activations to e4m3: within 5% relative L2 of the fp8-weight run (which is itself
    within 10% of float32), different from it, deterministic, and the switch is gone after the run and after an
    interrupt."""
    from easyanimate_core import ops
    from easyanimate_core.handles import TransformerHandle

    fp8 = load_transformer(folder, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)[0]
    plain = TransformerHandle(fp8, torch.float32, MemoryPolicy("fp8"))
    fast = plain.replace(fp8_matmul=True)
    ref, got = run_handle(plain), run_handle(fast)
    rel = ((got - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05
    assert torch.equal(run_handle(fast), got)
    layers = ops.fp8_matmul_layers(fp8)
    block_linears = [m for m in fp8.transformer_blocks.modules() if isinstance(m, ops.Linear)]
    assert layers == block_linears  # every linear layer of the blocks (stored in fp8), nothing outside them
    assert all(not {"fp8_matmul", "fp8_rowwise", "fp8_weight_scale"} & set(m.__dict__) for m in layers)
    steps = []
    with pytest.raises(Interrupted):
        run_handle(fast, progress=lambda i, n, x: steps.append(i), should_stop=lambda: len(steps) == 1)
    assert all(not {"fp8_matmul", "fp8_rowwise", "fp8_weight_scale"} & set(m.__dict__) for m in layers)
    assert torch.equal(run_handle(plain), ref)


def test_speed_options_and_cfg_refuse_what_would_fail_or_make_nan(model):
    from easyanimate_core.runner import check_speed_options

    with pytest.raises(ValueError, match="unknown torch.compile backend 'bogus'; choose one of inductor"):
        check_speed_options(MemoryPolicy(), "sdpa", "bogus")  # was torch's InvalidBackend mid-run
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="TeaCache threshold must be 0 \\(off\\) or positive"):
            check_speed_options(MemoryPolicy(), "sdpa", None, teacache=bad)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cfg must be a finite number"):
            run(model, cfg=bad)


def test_fp8_matmul_checks(monkeypatch):
    from easyanimate_core.runner import check_fp8_matmul_device, check_speed_options

    check_speed_options(MemoryPolicy("fp8"), "sdpa", None, fp8_matmul=True)
    for mode in ("none", "model_offload", "block_swap"):
        with pytest.raises(ValueError, match="memory mode fp8"):
            check_speed_options(MemoryPolicy(mode), "sdpa", None, fp8_matmul=True)
    check_fp8_matmul_device(CPU)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3090")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    with pytest.raises(ValueError, match="RTX 3090 is 8.6: turn fp8_matmul off"):
        check_fp8_matmul_device(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    check_fp8_matmul_device(torch.device("cuda"))
    from easyanimate_core.ops import rowwise_fp8

    assert not rowwise_fp8(torch.device("cuda"))  # Ada: one scale per tensor
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert rowwise_fp8(torch.device("cuda"))  # Hopper: per-token scales
    with pytest.raises(ValueError, match="not on mps"):
        check_fp8_matmul_device(torch.device("mps"))


def test_noise_for_a_batch_index_is_that_of_the_whole_batch():
    """initial_noise with indices (a LATENT's batch_index): each item's noise is that item's in the batch drawn
    whole with the same seed (duplicates and gaps included), and without indices nothing changed."""
    shape = (3, 16, 2, 3, 5)
    whole, _ = initial_noise(shape, 11)
    picked, _ = initial_noise((3, *shape[1:]), 11, [2, 0, 2])
    assert torch.equal(picked, whole[[2, 0, 2]])
    far, _ = initial_noise((1, *shape[1:]), 11, [5])
    assert torch.equal(far, initial_noise((6, *shape[1:]), 11)[0][5:])
    assert torch.equal(whole, torch.randn(shape, generator=torch.Generator().manual_seed(11)))


def test_inductor_on_a_gpu_without_triton_is_refused_before_work(monkeypatch):
    import importlib.util

    from easyanimate_core.runner import check_inductor_device

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real_find_spec(name, *a)
    )
    check_inductor_device(CPU)  # inductor compiles C++ for the CPU
    check_inductor_device(torch.device("mps"))  # and Metal for Apple GPUs
    with pytest.raises(ValueError, match="needs Triton.*triton-windows.*set compile to off"):
        check_inductor_device(torch.device("cuda"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "triton" else None)
    check_inductor_device(torch.device("cuda"))


def test_vram_estimates(model):
    """The estimates hosts use to make room: weights as placed (block swap holds two streamed blocks, fp8 one
    byte per weight) plus activations that grow with the video; tiling bounds the VAE's."""
    from easyanimate_core import memory as M

    small, large = (1, 16, 3, 6, 8), (1, 16, 13, 72, 126)
    none = M.sampling_vram_bytes(model, MemoryPolicy(), small, torch.float32)
    assert none > M.param_bytes(model)
    assert M.sampling_vram_bytes(model, MemoryPolicy(), large, torch.float32) > none
    assert M.sampling_vram_bytes(model, MemoryPolicy(), small, torch.bfloat16) < none
    blocks = [M.param_bytes(b) for b in model.transformer_blocks]
    swap0 = M.sampling_vram_bytes(model, MemoryPolicy("block_swap", 0), small, torch.float32)
    assert none - swap0 == sum(blocks) - 2 * max(blocks)
    assert M.sampling_vram_bytes(model, MemoryPolicy("block_swap", 9), small, torch.float32) == none  # all resident
    fp8 = torch.nn.Linear(4, 4).to(torch.float8_e4m3fn)
    assert M.param_bytes(fp8) == 16 + 4 and M.param_bytes(fp8, CPU) == 0 == M.param_bytes(fp8, CPU)
    assert M.param_bytes(fp8, torch.device("meta")) == 20  # on the CPU, so placing it elsewhere adds it all
    resident = M.sampling_vram_bytes(model, MemoryPolicy(), small, torch.float32, device=CPU)
    assert none - resident == M.param_bytes(model)  # weights already on the compute device add nothing
    swapped = M.sampling_vram_bytes(model, MemoryPolicy("block_swap", 0), small, torch.float32, device=CPU)
    assert swapped - resident == 2 * max(blocks)  # the two streamed copies are made even so


def test_sampling_needs_per_mode(model, folder):
    """The out-of-memory advice's estimates: each mode's equals the estimate hosts make room with for that mode
    (nothing on the device yet); fp8 counts the blocks' 2-D weights at one byte; a model loaded in fp8 counts
    those at the compute dtype's size in the other modes, which load them so."""
    from easyanimate_core import memory as M

    shape = (1, 16, 3, 6, 8)
    needs = M.sampling_needs(model, MemoryPolicy(), shape, torch.float32)
    for mode in ("none", "model_offload"):
        assert needs.mode(mode) == M.sampling_vram_bytes(model, MemoryPolicy(mode), shape, torch.float32)
    for resident in range(5):
        policy = MemoryPolicy("block_swap", resident)
        assert needs.mode("block_swap", resident) == M.sampling_vram_bytes(model, policy, shape, torch.float32)
    block_weights = sum(p.numel() for n, p in model.named_parameters() if n.startswith("transformer_blocks.") and n.endswith(".weight") and p.ndim == 2)  # fmt: skip
    assert block_weights > 0 and needs.weights - needs.fp8_weights == 3 * block_weights
    fp8 = load_transformer(folder, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)[0]
    as_fp8 = M.sampling_needs(fp8, MemoryPolicy("fp8"), shape, torch.float32)
    assert as_fp8 == needs and as_fp8.mode("fp8") - as_fp8.activations == M.param_bytes(fp8)
    assert needs.resident_blocks_within(needs.mode("block_swap", 1)) == 1  # 2 resident: one more block on the GPU
    assert needs.resident_blocks_within(2 * needs.mode("none")) == 3  # all 4 resident is mode none: never offered
    assert needs.resident_blocks_within(needs.mode("block_swap", 0) - 1) is None


def oom_in_sampling(model, monkeypatch, error, total=None, policy=MemoryPolicy(), shape=(1, 16, 2, 4, 4)):
    """The error run_sampler raises when sampling fails with ``error`` on a device of ``total`` bytes."""
    from easyanimate_core import runner
    from easyanimate_core.handles import PromptEmbeds, TransformerHandle

    def sample(*args, **kwargs):
        raise error

    monkeypatch.setattr(runner, "sample", sample)
    monkeypatch.setattr(runner, "device_memory", lambda device: total)
    embeds = PromptEmbeds(text(1), text(2), "qwen2vl")
    kw = dict(steps=2, cfg=4.0, seed=5, scheduler="Flow", device=CPU, offload=CPU)
    with pytest.raises(BaseException) as info:
        runner.run_sampler(TransformerHandle(model, torch.float32, policy), embeds, shape, **kw)
    return info.value


def test_out_of_memory_while_sampling_says_which_memory_modes_fit(model, monkeypatch):
    """The error keeps its type (hosts still see an out-of-memory error: ComfyUI unloads its models and adds its
    tips) and its original message, and names the size, the mode, its need, and only modes that need less than it
    and fit this GPU."""
    from easyanimate_core import memory as M
    from easyanimate_core.memory import readable_size
    from easyanimate_core.runner import FIT_SHARE

    shape = (2, 16, 2, 4, 4)
    needs = M.sampling_needs(model, MemoryPolicy(), shape, torch.float32)
    # the tiny model's blocks differ in size: fp8 < block swap with 0 or 1 resident < none = 2 resident < 3 resident
    assert needs.mode("fp8") < needs.mode("block_swap", 0) < needs.mode("block_swap", 1) < needs.mode("none")
    assert needs.mode("block_swap", 2) == needs.mode("none") < needs.mode("block_swap", 3)
    total = int(needs.mode("block_swap", 1) / FIT_SHARE) + 2  # fp8 and one resident block fit, none does not
    assert needs.resident_blocks_within(int(total * FIT_SHARE)) == 1
    original = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    error = oom_in_sampling(model, monkeypatch, original, total, shape=shape)
    assert type(error) is torch.OutOfMemoryError and error.__cause__ is original
    message, gpu = str(error), f"this {readable_size(total)} GPU"
    assert message.startswith(
        f"out of memory on cpu while sampling 32x32, 5 frames, 2 videos in memory mode none, which needs about "
        f"{readable_size(needs.mode('none'))} at this size"
    )
    swap1 = f"block_swap with at most 1 of 4 blocks resident (about {readable_size(needs.mode('block_swap', 1))})"
    assert (
        f"These need less and fit {gpu}: fp8 (about {readable_size(needs.mode('fp8'))}), {swap1}; choose one" in message
    )
    assert "model_offload" not in message and error.advice in message  # it needs what none needs: it does not fit
    assert message.endswith("[CUDA out of memory. Tried to allocate 9.00 GiB]")
    # a GPU where none fits by the estimate: model_offload is offered for what it frees (the text encoder)
    roomy = str(oom_in_sampling(model, monkeypatch, original, 2**40, shape=shape))
    assert "resident (about" in roomy and "model_offload (the same for sampling, but the text encoder leaves" in roomy
    # block swap with more resident blocks than the model has is all resident; fewer is suggested, not the same
    swap = str(oom_in_sampling(model, monkeypatch, original, total, MemoryPolicy("block_swap", 100), shape))
    assert f"block_swap with 4 of 4 blocks resident, which needs about {readable_size(needs.mode('none'))}" in swap
    assert swap1 in swap and "model_offload" not in swap
    # nothing that needs as much as the failed mode: fp8 has nothing below it, block swap with none resident only fp8
    fp8 = oom_in_sampling(model, monkeypatch, original, 2**40, MemoryPolicy("fp8"), shape)
    assert "These need less" not in str(fp8)
    assert f"That fits this {readable_size(2**40)} GPU by the estimate, so something else holds its memory" in str(fp8)
    swap0 = str(oom_in_sampling(model, monkeypatch, original, 2**40, MemoryPolicy("block_swap", 0), shape))
    assert (
        f"These need less and fit this {readable_size(2**40)} GPU: fp8 (about {readable_size(needs.mode('fp8'))}); choose"
        in swap0
    )
    for policy in (MemoryPolicy("fp8"), MemoryPolicy("block_swap", 0)):
        small = str(oom_in_sampling(model, monkeypatch, original, needs.mode("fp8") // 2, policy, shape))
        assert f"No memory mode needs less and fits this {readable_size(needs.mode('fp8') // 2)} GPU" in small
    # a device of unknown size: every mode that needs less
    unknown = str(oom_in_sampling(model, monkeypatch, original, None, shape=shape))
    assert (
        f"These need less: fp8 (about {readable_size(needs.mode('fp8'))}), {swap1}, model_offload (the same" in unknown
    )
    unknown_fp8 = str(oom_in_sampling(model, monkeypatch, original, None, MemoryPolicy("fp8"), shape))
    assert "No memory mode needs less: generate fewer frames" in unknown_fp8


def test_other_errors_while_sampling_pass_unchanged(model, monkeypatch):
    from easyanimate_core import runner

    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None:  # ROCm's out of memory (torch >= 2.8), with its error code kept
        hip = accelerator("HIP out of memory")
        hip.error_code = 2
        error = oom_in_sampling(model, monkeypatch, hip)
        assert type(error) is accelerator and str(error).startswith("out of memory on cpu while sampling")
        assert error.error_code == 2 and error.__cause__ is hip
        other = accelerator("device-side assert triggered")
        assert oom_in_sampling(model, monkeypatch, other) is other
    other = RuntimeError("out of memory?")  # not torch's out-of-memory error
    assert oom_in_sampling(model, monkeypatch, other) is other
    # a fault while making the advice never hides the out-of-memory error
    monkeypatch.setattr(runner, "sampling_needs", lambda *a: 1 / 0)
    original = torch.OutOfMemoryError("CUDA out of memory")
    assert oom_in_sampling(model, monkeypatch, original) is original and original.__cause__ is None


def test_a_batch_of_videos_pairs_every_video_with_the_prompt(model):
    """A LATENT batch (core LatentBatch / Repeat Latent Batch) samples every video with the same prompt: the first
    video equals a batch-of-one run (its noise is the first slice of the seed's stream), the second differs."""
    from easyanimate_core.handles import PromptEmbeds, TransformerHandle
    from easyanimate_core.runner import run_sampler

    handle, embeds = TransformerHandle(model, torch.float32), PromptEmbeds(text(1), text(2), "qwen2vl")
    kw = dict(steps=2, cfg=4.0, seed=5, scheduler="Flow", device=CPU, offload=CPU)
    single = run_sampler(handle, embeds, (1, 16, 2, 4, 4), **kw)
    both = run_sampler(handle, embeds, (2, 16, 2, 4, 4), **kw)
    assert both.shape == (2, 16, 2, 4, 4)
    torch.testing.assert_close(both[:1], single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[1], both[0], atol=1e-3)
