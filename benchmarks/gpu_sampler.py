"""Sampler speed and peak memory of every memory mode, ours against diffusers' EasyAnimatePipeline, in one run.

Random weights in the shape of EasyAnimate V5.1 12B (48 layers, 3072 wide, Qwen2-VL 3584-wide text),
CFG on, the prompt embeddings given directly (text encoding is not timed), latents returned (VAE decode
not timed). Seconds per step are the median over the timed steps after one warm-up step.

    python benchmarks/gpu_sampler.py --size 384x672x49 --size 576x1008x49            # on a CUDA machine
    python benchmarks/gpu_sampler.py --preset tiny --device cpu --size 64x64x9        # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easyanimate_core.configs import TransformerConfig  # noqa: E402
from easyanimate_core.handles import PromptEmbeds, TransformerHandle  # noqa: E402
from easyanimate_core.keys import transformer_to_diffusers  # noqa: E402
from easyanimate_core.memory import MemoryPolicy, is_fp8_weight, sampling_needs  # noqa: E402
from easyanimate_core.runner import run_sampler  # noqa: E402
from easyanimate_core.text import TextEmbeds  # noqa: E402
from easyanimate_core.transformer import EasyAnimateTransformer  # noqa: E402

PRESETS = {
    "12b": dict(num_attention_heads=48, attention_head_dim=64, num_layers=48, mmdit_layers=48, text_embed_dim=3584),
    # the published V5.1 7B config: as wide as the 12B, 36 layers, the last 18 single-stream
    "7b": dict(num_attention_heads=48, attention_head_dim=64, num_layers=36, mmdit_layers=18, text_embed_dim=3584),
    "12b-4": dict(num_attention_heads=48, attention_head_dim=64, num_layers=4, mmdit_layers=4, text_embed_dim=3584),
    "mid": dict(num_attention_heads=24, attention_head_dim=64, num_layers=4, mmdit_layers=4, text_embed_dim=3584),
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, mmdit_layers=2, text_embed_dim=32),
}
COMMON = dict(in_channels=16, out_channels=16, patch_size=2, time_embed_dim=512, add_norm_text_encoder=True)
TEXT_LEN = 256
REFERENCE: dict = {}  # ours, mode none: final latents per (size, steps)


def random_state_dict(kw: dict, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Random weights on the CPU; drawn on ``device`` (a 12B set takes minutes to draw on a CPU)."""
    with torch.device("meta"):
        model = EasyAnimateTransformer(TransformerConfig.from_dict(kw))
    g = torch.Generator(device).manual_seed(0)
    return {
        k: (torch.randn(v.shape, generator=g, device=device) * 0.02).to(dtype).cpu()
        for k, v in model.state_dict().items()
    }


def ours_model(sd: dict, kw: dict, share: bool = False) -> EasyAnimateTransformer:
    """``share``: the model takes the tensors of ``sd`` itself (a child process, which measures one run)."""
    with torch.device("meta"):
        model = EasyAnimateTransformer(TransformerConfig.from_dict(kw))
    model.load_state_dict(sd if share else {k: v.clone() for k, v in sd.items()}, assign=True)
    return model.eval().requires_grad_(False)  # as loading.load_transformer returns it


def embeds(kw: dict, dtype) -> PromptEmbeds:
    g = torch.Generator().manual_seed(1)

    def one():
        return TextEmbeds(
            torch.randn(1, TEXT_LEN, kw["text_embed_dim"], generator=g).to(dtype),
            torch.ones(1, TEXT_LEN, dtype=torch.long),
        )

    return PromptEmbeds(one(), one(), "qwen2vl")


class StepClock:
    """Progress callback recording the wall time of every step (synchronising CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, [time.perf_counter()]

    def __call__(self, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter())
        return kwargs.get("callback_kwargs", {}) if "callback_kwargs" in kwargs or len(args) == 4 else None

    def per_step(self) -> float:
        steps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return statistics.median(steps[1:] if len(steps) > 1 else steps)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    elif CLEAR_REFS.exists():
        CLEAR_REFS.write_text("5")  # Linux: the peak RSS (VmHWM) starts again from the current RSS


def peak_gib(device: torch.device) -> float:
    """Peak VRAM on CUDA; on the CPU the process's peak RSS since ``reset_peak`` (VmHWM; where /proc lacks it,
    since the process started). With --isolate a child holds only the model being measured, so that peak is the
    mode's footprint while sampling: its weights as stored, the streamed or converted copies, the activations,
    and the interpreter's and torch's own (about 0.3 GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


CLEAR_REFS, STATUS = Path("/proc/self/clear_refs"), Path("/proc/self/status")


def run_ours(sd, kw, mode, size, args, device, dtype):
    h, w, f = size
    policy = MemoryPolicy(mode, resident_blocks=args.resident_blocks)
    model = ours_model(sd, kw, share=args.child)
    if args.child:
        sd.clear()  # the model holds the only copy of the weights
    if mode == "fp8":
        for name, p in model.named_parameters():
            if is_fp8_weight(name, p):
                p.data = p.data.to(torch.float8_e4m3fn)
    if mode == "none":
        model.to(device)
    fp8_matmul = args.fp8_matmul and mode == "fp8"
    handle = TransformerHandle(
        model, dtype, policy, attention=args.attention, compile=args.compile, fp8_matmul=fp8_matmul
    )
    clock = StepClock(device)
    stats: dict = {}
    latent_shape = (1, 16, (f - 1) // 4 + 1, h // 8, w // 8)

    def sample(steps: int, teacache: float, handle: TransformerHandle = handle) -> torch.Tensor:
        return run_sampler(
            handle, embeds(kw, dtype), latent_shape, steps=steps, cfg=6.0, seed=0,
            scheduler="Flow", device=device, offload=torch.device("cpu"), progress=lambda i, n, x: clock(),
            teacache=teacache, stats=stats,
        )  # fmt: skip

    key = (size, args.steps)
    if args.compile and mode == "none":  # the eager output, to check the compiled one against
        REFERENCE[key] = sample(args.steps, 0.0, handle.replace(compile=None)).float().cpu()
    if args.compile:  # compiling is a one-off cost per shape: keep it out of the step times
        t0 = time.perf_counter()
        sample(1, 0.0)
        print(f"# compile ({args.compile}) and first step: {time.perf_counter() - t0:.1f} s", flush=True)
    reset_peak(device)
    clock.times = [time.perf_counter()]
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            latents = sample(args.steps, args.teacache)
        key = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))
    else:
        latents = sample(args.steps, args.teacache)
    if args.teacache:  # with TeaCache the mean over all steps is what a user waits for
        total = clock.times[-1] - clock.times[0]
        print(f"# TeaCache {args.teacache}: skipped {stats.get('teacache_skipped')} calls, ran {stats.get('transformer_calls')}, "
              f"mean {total / args.steps:.3f} s/it over {args.steps} steps", flush=True)  # fmt: skip
    result = clock.per_step(), peak_gib(device)
    # what the out-of-memory advice would say this mode needs here, next to the measured peak (on CUDA the two
    # measure the same thing; on the CPU the peak RSS also holds the interpreter and torch)
    estimate = sampling_needs(model, policy, latent_shape, dtype).mode(mode, args.resident_blocks) / 2**30
    print(f"# ours {mode} at {'x'.join(map(str, size))}: estimated need {estimate:.4g} GiB, peak {result[1]:.4g} GiB", flush=True)  # fmt: skip
    # every mode must give the output of "none" (fp8: close to it); a race in block streaming would show here
    if key not in REFERENCE and mode == "none":
        REFERENCE[key] = latents.float().cpu()
    elif key in REFERENCE and not args.teacache:
        ref = REFERENCE[key]
        err = ((latents.float().cpu() - ref).norm() / ref.norm()).item()
        what = f"{mode}{' fp8_matmul' if fp8_matmul else ''}{' compiled' if args.compile else ''}"
        print(f"# ours {what} vs eager none at {'x'.join(map(str, size))}: relative difference {err:.2e}", flush=True)
    return result


def run_diffusers(sd, kw, mode, size, args, device, dtype):
    from diffusers import (
        AutoencoderKLMagvit,
        EasyAnimatePipeline,
        EasyAnimateTransformer3DModel,
        FlowMatchEulerDiscreteScheduler,
    )

    h, w, f = size
    with torch.device("meta"):
        tr = EasyAnimateTransformer3DModel(**kw)
    converted = transformer_to_diffusers(sd)
    tr.load_state_dict(converted if args.child else {k: v.clone() for k, v in converted.items()}, assign=True)
    del converted
    if args.child:
        sd.clear()  # the model holds the only copy of the weights
    vae = AutoencoderKLMagvit(block_out_channels=(8, 16, 16, 16), norm_num_groups=4, latent_channels=16)
    pipe = EasyAnimatePipeline(
        vae=vae.to(dtype),
        text_encoder=None,
        tokenizer=None,
        transformer=tr,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    if mode == "none":
        pipe.to(device)
    elif mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "fp8":
        tr.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "block_swap":
        tr.enable_group_offload(
            device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=device.type == "cuda",
        )
        pipe.vae.to(device)
    e = embeds(kw, dtype)
    clock = StepClock(device)
    reset_peak(device)
    clock.times = [time.perf_counter()]
    pipe(
        prompt_embeds=e.positive.embeds, prompt_attention_mask=e.positive.mask, negative_prompt_embeds=e.negative.embeds,
        negative_prompt_attention_mask=e.negative.mask, num_frames=f, height=h, width=w, num_inference_steps=args.steps,
        guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(0), output_type="latent", callback_on_step_end=clock,
    )  # fmt: skip
    result = clock.per_step(), peak_gib(device)
    del pipe, tr
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="12b")
    p.add_argument("--size", action="append", help="HxWxF, e.g. 576x1008x49 (repeatable)")
    p.add_argument("--mode", action="append", choices=["none", "model_offload", "fp8", "block_swap"])
    p.add_argument("--impl", action="append", choices=["ours", "diffusers"])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--resident-blocks", type=int, help="block_swap: blocks kept on the device (default: half)")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--compile", default=None, help="torch.compile backend for ours (e.g. inductor)")
    p.add_argument("--teacache", type=float, default=0.0, help="TeaCache threshold for ours")
    p.add_argument("--fp8-matmul", action="store_true", help="ours in mode fp8: fp8 GEMMs (ops.fp8_linear)")
    p.add_argument("--profile", action="store_true", help="print the kernel table of ours (torch.profiler)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--isolate", action="store_true", help="each measurement in a fresh process (CPU peak RSS)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure ours and diffusers alternately this many times; the table "
        "gives the median s/it, the median of the rounds' speed-ups and their range",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.resident_blocks is None:  # 24 of the 12B's 48; 1 of tiny's 2, so a smoke run streams a block too
        args.resident_blocks = PRESETS[args.preset]["num_layers"] // 2
    if args.isolate and not args.child:
        return run_isolated(args)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    kw = {**COMMON, **PRESETS[args.preset]}
    sd = random_state_dict(kw, dtype, device)
    sizes = [tuple(int(v) for v in s.split("x")) for s in (args.size or ["384x672x49"])]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# preset {args.preset}, {args.dtype}, {args.steps} steps, CFG 6, device {name}")
    print("| size | mode | ours s/it | diffusers s/it | speed-up | ours peak GiB | diffusers peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        for mode in args.mode or ["none", "model_offload", "fp8", "block_swap"]:
            runs: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.rounds):  # ours and diffusers alternate, so slow drifts of a shared box hit both
                for impl in args.impl or ["ours", "diffusers"]:
                    fn = run_ours if impl == "ours" else run_diffusers
                    try:
                        res = fn(sd, kw, mode, size, args, device, dtype)
                    except torch.OutOfMemoryError:
                        res = (float("nan"), float("inf"))
                    except Exception:  # one broken configuration must not lose the rest of a long GPU run
                        traceback.print_exc()
                        res = (float("nan"), float("nan"))
                    reset_peak(device)
                    if args.child:
                        print(json.dumps({"s_it": res[0], "peak": res[1]}))
                        return
                    runs.setdefault(impl, []).append(res)
            print_row(size, mode, runs, "{:.1f}")


def print_row(size, mode, runs: dict[str, list[tuple[float, float]]], peak_fmt: str) -> None:
    """One table row: median s/it per implementation over the rounds, the median of the rounds' speed-ups."""
    nan = [(float("nan"), float("nan"))]
    o, d = runs.get("ours", nan), runs.get("diffusers", nan)
    ratios = [b[0] / a[0] for a, b in zip(o, d)]
    ratio, spread = statistics.median(ratios), f" ({min(ratios):.2f}-{max(ratios):.2f})"
    o_s, d_s = statistics.median(r[0] for r in o), statistics.median(r[0] for r in d)
    o_p, d_p = max(r[1] for r in o), max(r[1] for r in d)
    print(
        f"| {'x'.join(map(str, size))} | {mode} | {o_s:.3f} | {d_s:.3f} | x{ratio:.2f}{spread if len(o) > 1 else ''} "
        f"| {peak_fmt.format(o_p)} | {peak_fmt.format(d_p)} |",
        flush=True,
    )


def run_isolated(args) -> None:
    """The same table, every (size, mode, implementation) measured in a fresh child process."""
    base = [sys.executable, __file__, "--child", "--preset", args.preset, "--steps", str(args.steps)]
    base += ["--resident-blocks", str(args.resident_blocks), "--attention", args.attention]
    base += ["--device", args.device, "--dtype", args.dtype] + (["--fp8-matmul"] if args.fp8_matmul else [])
    unit = "GiB VRAM" if args.device.startswith("cuda") else "GiB RSS"
    print(f"# preset {args.preset}, {args.dtype}, {args.steps} steps, CFG 6, device {args.device}, one process per run")
    print(f"| size | mode | ours s/it | diffusers s/it | speed-up | ours peak {unit} | diffusers peak {unit} |")
    print("|---|---|---|---|---|---|---|")
    for size in args.size or ["384x672x49"]:
        for mode in args.mode or ["none", "model_offload", "fp8", "block_swap"]:
            runs: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for impl in ("ours", "diffusers"):
                    cmd = base + ["--size", size, "--mode", mode, "--impl", impl]
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    line = json.loads(out.strip().splitlines()[-1])
                    runs.setdefault(impl, []).append((line["s_it"], line["peak"]))
            print_row(tuple(int(v) for v in size.split("x")), mode, runs, "{:.2f}")


if __name__ == "__main__":
    main()
