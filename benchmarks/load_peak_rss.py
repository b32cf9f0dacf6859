"""Peak memory of loading a transformer checkpoint: ours against diffusers' ``from_pretrained``.

Writes a random EasyAnimate V5.1 transformer (``config.json`` + one ``diffusion_pytorch_model.safetensors``,
about 2 GB in bf16 by default) in the original layout and the same tensors in the diffusers layout, then
loads each in a fresh child process and reports the child's peak RSS above its resident size after imports,
against the file size. The peak is VmHWM, reset after the imports (``/proc/self/clear_refs``), so it counts
the load only; ``getrusage().ru_maxrss`` is printed as well (it never resets, and after ``exec`` it starts at
the parent's peak, so it can only over-state). The writer streams one tensor at a time and stays small.

    python benchmarks/load_peak_rss.py                       # temp dir, deleted afterwards
    python benchmarks/load_peak_rss.py --dir /data --keep    # keep the checkpoints for another run
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from easyanimate_core.configs import TransformerConfig  # noqa: E402
from easyanimate_core.keys import transformer_to_diffusers  # noqa: E402
from easyanimate_core.transformer import EasyAnimateTransformer  # noqa: E402

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "fp16": (torch.float16, "F16"), "fp32": (torch.float32, "F32")}
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
TARGET = 1.3  # ours must stay within this many times the file size


def transformer_config(width: int, layers: int) -> dict:
    """A V5.1-style InP transformer config (Qwen2-VL text width 3584), ``width`` = heads x 64."""
    return {
        "_class_name": "EasyAnimateTransformer3DModel",
        "num_attention_heads": width // 64,
        "attention_head_dim": 64,
        "in_channels": 33,
        "out_channels": 16,
        "patch_size": 2,
        "time_embed_dim": 512,
        "num_layers": layers,
        "mmdit_layers": layers,
        "text_embed_dim": 3584,
        "add_norm_text_encoder": True,
        "after_norm": False,
        "resize_inpaint_mask_directly": True,
        "enable_text_attention_mask": True,
        "add_noise_in_inpaint_model": True,
    }


def write_safetensors(path: Path, shapes: dict[str, torch.Size], dtype_name: str, rename=lambda k: k) -> int:
    """Stream a safetensors file: header first, then each tensor generated (seeded by its name) and written.

    Returns the file size. Only one tensor is in memory at a time.
    """
    dtype, tag = DTYPES[dtype_name]
    item = torch.empty((), dtype=dtype).element_size()
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape) * item
        header[rename(name)] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in shapes.items():
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            t = (torch.randn(shape, generator=g) * 0.02).to(dtype)
            f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return path.stat().st_size


def write_checkpoints(root: Path, width: int, layers: int, dtype_name: str) -> tuple[Path, Path, int]:
    """``root/original/transformer`` and ``root/diffusers/transformer`` with the same tensors."""
    config = transformer_config(width, layers)
    with torch.device("meta"):
        model = EasyAnimateTransformer(TransformerConfig.from_dict(config))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    # transformer_to_diffusers renames keys only; apply it to a dict of names to get the key map.
    names = dict(zip(shapes, transformer_to_diffusers(dict.fromkeys(shapes)), strict=True))
    folders = []
    for layout, rename in (("original", lambda k: k), ("diffusers", names.__getitem__)):
        folder = root / layout / "transformer"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        size = write_safetensors(folder / WEIGHTS_NAME, shapes, dtype_name, rename)
        folders.append(folder)
    return folders[0], folders[1], size


def status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: current, VmHWM: peak resident set size), in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak counts the load only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(impl: str, folder: str) -> None:
    """Load ``folder`` with ``impl`` and print peak RSS above the post-import baseline (KiB) as json."""
    from diffusers import EasyAnimateTransformer3DModel

    from easyanimate_core.loading import load_transformer

    baseline = status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_reset = reset_peak()
    start = time.perf_counter()
    if impl == "ours":
        model, _ = load_transformer(folder, dtype=torch.bfloat16)
    else:
        model = EasyAnimateTransformer3DModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    seconds = time.perf_counter() - start
    lazy_peak = status_kb("VmHWM") if hwm_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # safetensors maps the file, so untouched weights are not resident yet: read every byte, as the first
    # forward (or a move to the GPU) would, so that the peak counts all the weights.
    checksum = sum(float(t.float().sum()) for t in model.state_dict().values())
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = status_kb("VmHWM") if hwm_reset else maxrss
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        json.dumps(
            {
                "baseline_kb": baseline,
                "lazy_peak_kb": lazy_peak,
                "peak_kb": peak,
                "ru_maxrss_before_kb": maxrss_before,
                "ru_maxrss_kb": maxrss,
                "rss_after_kb": status_kb("VmRSS"),
                "param_bytes": params,
                "checksum": checksum,
                "s": seconds,
            }
        )
    )


def measure(impl: str, folder: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, str(folder)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    ap.add_argument("--width", type=int, default=1536, help="transformer width (heads x 64)")
    ap.add_argument("--layers", type=int, default=16, help="transformer blocks (16 x 1536 wide: ~2.1 GB in bf16)")
    ap.add_argument("--file-dtype", choices=sorted(DTYPES), default="bf16", help="dtype stored in the file")
    ap.add_argument("--impl", action="append", choices=["ours", "diffusers"], help="loaders to measure (default both)")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ea_load_rss_", dir=args.dir))
    try:
        start = time.perf_counter()
        original, diffusers_folder, size = write_checkpoints(root, args.width, args.layers, args.file_dtype)
        print(f"wrote 2 x {size / 2**30:.2f} GiB ({args.file_dtype}) in {time.perf_counter() - start:.0f} s: {root}")
        worst = 0.0
        for impl in args.impl or ["ours", "diffusers"]:
            r = measure(impl, original if impl == "ours" else diffusers_folder)
            delta = (r["peak_kb"] - r["baseline_kb"]) * 1024
            delta_maxrss = (r["ru_maxrss_kb"] - r["baseline_kb"]) * 1024
            lazy = (r["lazy_peak_kb"] - r["baseline_kb"]) * 1024
            ratio = delta / size
            if impl == "ours":
                worst = ratio
            print(
                f"{impl:9s} load {r['s']:6.1f} s   peak RSS above baseline {delta / 2**30:6.2f} GiB = "
                f"{ratio:.2f} x file   (before touching the weights {lazy / size:.2f} x; "
                f"ru_maxrss - baseline {delta_maxrss / size:.2f} x; RSS after "
                f"{(r['rss_after_kb'] - r['baseline_kb']) / 2**20:.2f} GiB above baseline; "
                f"parameters {r['param_bytes'] / 2**30:.2f} GiB)"
            )
        if args.impl is None or "ours" in args.impl:
            verdict = "OK" if worst <= TARGET else "OVER TARGET"
            print(f"ours: {worst:.2f} x file size (target <= {TARGET} x): {verdict}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
