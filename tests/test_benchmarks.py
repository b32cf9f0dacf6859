"""The benchmark scripts still run against the current code (no timings are checked).

They are what a lent GPU session runs first (`benchmarks/gpu_session.sh`), with minutes of device time per
session: a script broken by a change to the pack must fail here, on the CPU, not there. Each runs in a child
process as its README command does, at a tiny size, and the values it prints that do not depend on the machine
(output differences, byte counts, table rows without a failed run) are checked.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def script(name: str, *args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr  # the sampler script prints a caught failure and goes on
    return done.stdout


def test_sampler_benchmark_runs_every_mode_and_checks_it_against_none():
    out = script(
        "gpu_sampler.py", "--preset", "tiny", "--device", "cpu", "--dtype", "fp32", "--size", "32x32x5",
        "--steps", "2", "--mode", "none", "--mode", "block_swap", "--mode", "fp8",
    )  # fmt: skip
    rows = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| 32x32x5 |")]
    assert rows == ["none", "block_swap", "fp8"]
    assert "nan" not in out
    diffs = dict(re.findall(r"# ours (\w+) vs eager none at 32x32x5: relative difference (\S+)", out))
    assert float(diffs["block_swap"]) == 0  # streamed blocks (1 of tiny's 2 resident by default) change nothing
    assert 0 < float(diffs["fp8"]) < 0.1
    estimates = dict(re.findall(r"# ours (\w+) at 32x32x5: estimated need (\S+) GiB, peak \S+ GiB", out))
    assert estimates.keys() == {"none", "block_swap", "fp8"}
    assert float(estimates["fp8"]) < float(estimates["none"])  # its block weights at one byte instead of four


def test_transformer_step_benchmark_compares_equal_outputs():
    out = script(
        "transformer_step.py", "--dtype", "fp32", "--layers", "2", "--width", "64", "--latent", "1", "4", "4",
        "--text-len", "8", "--text-dim", "32", "--repeats", "1",
    )  # fmt: skip
    diff = re.search(r"fp32: ours .* max \|diff\| (\S+)", out)
    assert diff and float(diff.group(1)) < 1e-5, out


def test_text_encoder_bytes_benchmark():
    """The numbers README quotes for --text-encoder-fp8 (from the published Qwen2-VL-7B architecture)."""
    out = script("text_encoder_bytes.py")
    assert "bf16: 14.19 GiB; fp8 linear weights (197 layers): 7.60 GiB (54%)" in out


def test_vram_estimates_benchmark():
    """The numbers README and RESULTS.md quote for the out-of-memory advice (12B, bf16, a 24 GiB GPU)."""
    out = script("vram_estimates.py", "--preset", "12b", "--size", "576x1008x49", "--gpu-gib", "24")
    assert "| 576x1008x49 | 27.4 GiB | 16.5 GiB | 17.4 GiB | 6.4 GiB | 33 of 48 |" in out


@pytest.mark.parametrize(
    "name", ["attention_backends.py", "cuda_check.py", "load_peak_rss.py", "vae_decode.py", "gpu_sampler.py"]
)
def test_every_benchmark_script_starts(name):
    """The CUDA-only ones and the slow ones at least import and parse their options here."""
    assert "usage:" in script(name, "--help")


def test_gpu_session_script_parses():
    done = subprocess.run(["bash", "-n", str(BENCH / "gpu_session.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
