#!/bin/bash
# The GPU measurements still pending in benchmarks/RESULTS.md, one device call (under 10 minutes) per phase:
#
#   bash benchmarks/gpu_session.sh 1   # CUDA checks: CLI on CPU vs CUDA, every shipped workflow through the
#                                      # node harness on CUDA, attention kernels, VAE decode vs diffusers
#   bash benchmarks/gpu_session.sh 2   # the 12B sampler at 576x1008x49: none and fp8 + fp8_matmul, compiled
#   bash benchmarks/gpu_session.sh 3   # build SageAttention 2 (Hopper kernels) from .sage/, time its kernel, then
#                                      # the 12B sampler in fp8 + fp8_matmul, compiled, with --attention sage
#   bash benchmarks/gpu_session.sh 4   # build FlashAttention 3 from .fa3/ (the longest build)
#   bash benchmarks/gpu_session.sh 5   # FlashAttention 3's kernel, then the sampler as in 3 with --attention flash3
#
# Phases 3-5 need the gitignored source folders .sage/ and .fa3/ (fetched sources, a build.sh and the build's
# ninja/setuptools/packaging wheels; see RESULTS.md): carry [".whl", ".sage"] for 3, [".whl", ".fa3"] for 4 and
# only [".whl"] for 5 (a carried folder replaces the device's copy, and the build of 4 must stay). A
# built module survives between calls only while the device stays warm (it idles out after about 30 s): start 5
# right after 4; the build logs and modules are also copied to $OUT.
#
# Logs go to $OUT (the device tool's output folder) or /tmp/gpu_session. Needs diffusers importable (on the lent
# H200: carry the wheels, see benchmarks/RESULTS.md). FlashAttention 3 is measured too when flash_attn_interface
# is importable (its build recipe is in RESULTS.md).
set -u
phase=${1:?usage: gpu_session.sh 1|2|3|4|5}
out=${OUT:-/tmp/gpu_session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
sage=$(pwd)/.sage/build fa3=$(pwd)/.fa3/hopper

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep the whole log, show its end
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "-- exit $? after $SECONDS s in all"
  tail -n 30 "$out/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if [ "$phase" = 1 ]; then
  step cuda_check 150 python3 benchmarks/cuda_check.py --work "$out/cuda_check"
  step workflows 150 env EASYANIMATE_HARNESS_DEVICE=cuda python3 -m tests.comfy_host.run_workflows "$out/workflows"
  step attention 60 python3 benchmarks/attention_backends.py --size 384x672x49 --size 576x1008x49
  step vae 120 python3 benchmarks/vae_decode.py --device cuda --dtype bf16 --size 576x1008x49 --repeats 2
  step vae_tiled 120 python3 benchmarks/vae_decode.py --device cuda --dtype bf16 --size 576x1008x49 --repeats 2 --tile
elif [ "$phase" = 2 ]; then
  step sampler 540 python3 benchmarks/gpu_sampler.py --size 576x1008x49 --mode none --mode fp8 --impl ours \
    --compile inductor --fp8-matmul
elif [ "$phase" = 3 ]; then
  step sage_build 330 bash .sage/build.sh
  step attention_sage 40 env PYTHONPATH="$sage:${PYTHONPATH:-}" python3 benchmarks/attention_backends.py --size 576x1008x49
  step sampler_sage 220 env PYTHONPATH="$sage:${PYTHONPATH:-}" python3 benchmarks/gpu_sampler.py --size 576x1008x49 \
    --mode fp8 --impl ours --compile inductor --fp8-matmul --attention sage
elif [ "$phase" = 4 ]; then
  step fa3_build 580 bash .fa3/build.sh
elif [ "$phase" = 5 ]; then
  step attention_fa3 40 env PYTHONPATH="$fa3:${PYTHONPATH:-}" python3 benchmarks/attention_backends.py --size 576x1008x49
  step sampler_fa3 300 env PYTHONPATH="$fa3:${PYTHONPATH:-}" python3 benchmarks/gpu_sampler.py --size 576x1008x49 \
    --mode fp8 --impl ours --compile inductor --fp8-matmul --attention flash3
else
  echo "unknown phase $phase: use 1-5" >&2
  exit 2
fi
