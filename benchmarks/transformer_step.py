"""Time one transformer forward (one sampler step with batched CFG) of ours and diffusers' on the same weights.

Both models get identical random weights (diffusers layout converted to ours), are timed alternately in
one process, and their peak RSS for one forward is measured in fresh child processes.

    python benchmarks/transformer_step.py --dtype fp32 --dtype bf16
    python benchmarks/transformer_step.py --latent 3 24 40 --full-last-block    # + ours with the text stream's
                                                                                # output computed in the last block
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from easyanimate_core.configs import TransformerConfig  # noqa: E402
from easyanimate_core.keys import transformer_to_diffusers  # noqa: E402
from easyanimate_core.transformer import EasyAnimateTransformer  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def model_kwargs(args) -> dict:
    return dict(
        num_attention_heads=args.width // 64,
        attention_head_dim=64,
        in_channels=16,
        out_channels=16,
        patch_size=2,
        num_layers=args.layers,
        mmdit_layers=args.layers,
        time_embed_dim=512,
        text_embed_dim=args.text_dim,
        add_norm_text_encoder=True,
    )


def build(impl: str, args, dtype: torch.dtype):
    """Deterministic random weights (the same for both implementations), built without a second copy."""
    kw = model_kwargs(args)
    with torch.device("meta"):
        ours = EasyAnimateTransformer(TransformerConfig.from_dict(kw))
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02).to(dtype) for k, v in sorted(ours.state_dict().items())}
    if impl == "ours":
        ours.load_state_dict(sd, assign=True)
        return ours.eval()
    from diffusers import EasyAnimateTransformer3DModel

    with torch.device("meta"):
        ref = EasyAnimateTransformer3DModel(**kw)
    ref.load_state_dict(transformer_to_diffusers(sd), assign=True)
    return ref.eval()


def make_inputs(args, dtype):
    g = torch.Generator().manual_seed(0)
    t, h, w = args.latent
    x = torch.randn(2, 16, t, h, w, generator=g).to(dtype)  # CFG batch: negative + positive
    txt = torch.randn(2, args.text_len, args.text_dim, generator=g).to(dtype)
    return x, torch.tensor([500.0, 500.0]), txt


def run(impl: str, model, x, t, txt, rope=None):
    if impl == "diffusers":
        return model(x, t.to(x.dtype), encoder_hidden_states=txt, return_dict=False)[0]
    if impl == "ours_full":  # ablation: the last block also computes the text stream's (unused) output
        last = model.transformer_blocks[-1]
        last.last = False
        try:
            return model(x, t, txt, rope=rope)
        finally:
            last.last = True
    return model(x, t, txt, rope=rope)


def child_peak(impl: str, args, dtype_name: str) -> float:
    """Peak RSS (MiB) of a fresh process that builds the model and runs one forward."""
    cmd = [sys.executable, __file__, "--child", impl, "--dtype", dtype_name, "--layers", str(args.layers)]
    cmd += ["--width", str(args.width), "--latent", *map(str, args.latent), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", action="append", choices=list(DTYPES))
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=1536)
    p.add_argument("--latent", type=int, nargs=3, default=[13, 24, 42], metavar=("T", "H", "W"))
    p.add_argument("--text-len", type=int, default=256)
    p.add_argument("--text-dim", type=int, default=3584)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--full-last-block", action="store_true", help="also time ours with a last block that updates the text too"
    )
    p.add_argument("--child", choices=["ours", "diffusers"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = args.dtype or ["fp32"]

    if args.child:
        dtype = DTYPES[dtypes[0]]
        model = build(args.child, args, dtype)
        x, t, txt = make_inputs(args, dtype)
        with torch.inference_mode():
            run(args.child, model, x, t, txt)
        print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    print(f"# {args.layers} layers, width {args.width}, latent {args.latent}, CFG batch 2, {args.threads} threads")
    for name in dtypes:
        dtype = DTYPES[name]
        models = {impl: build(impl, args, dtype) for impl in ("ours", "diffusers")}
        x, t, txt = make_inputs(args, dtype)
        rope = models["ours"].rope(*args.latent)
        with torch.inference_mode():
            diff = (
                (
                    run("ours", models["ours"], x, t, txt, rope).float()
                    - run("diffusers", models["diffusers"], x, t, txt).float()
                )
                .abs()
                .max()
            )
            timed = list(models.items()) + ([("ours_full", models["ours"])] if args.full_last_block else [])
            times = {impl: [] for impl, _ in timed}
            for _ in range(args.repeats):
                for impl, model in timed:
                    start = time.perf_counter()
                    run(impl, model, x, t, txt, rope)
                    times[impl].append(time.perf_counter() - start)
        del models
        med = {impl: statistics.median(v) for impl, v in times.items()}
        # speed-ups are medians of per-round ratios: robust to the slow drifts of a shared machine
        ratio = {impl: statistics.median(a / b for a, b in zip(v, times["ours"])) for impl, v in times.items()}
        peaks = {impl: child_peak(impl, args, name) for impl in ("ours", "diffusers")}
        print(
            f"{name}: ours {med['ours']:.3f} s/step, diffusers {med['diffusers']:.3f} s/step, "
            f"speed-up x{ratio['diffusers']:.2f}; peak RSS ours {peaks['ours']:.0f} MiB, "
            f"diffusers {peaks['diffusers']:.0f} MiB; max |diff| {diff.item():.2e}"
        )
        if args.full_last_block:
            print(
                f"{name}: ours with a full last block {med['ours_full']:.3f} s/step "
                f"(skipping the text output is x{ratio['ours_full']:.2f} faster)"
            )


if __name__ == "__main__":
    main()
