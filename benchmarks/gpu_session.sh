#!/bin/bash
# The GPU measurements still pending in benchmarks/RESULTS.md, in two device calls of under 10 minutes each:
#
#   bash benchmarks/gpu_session.sh 1   # CUDA checks: CLI on CPU vs CUDA, every shipped workflow through the
#                                      # node harness on CUDA, attention kernels, VAE decode vs diffusers
#   bash benchmarks/gpu_session.sh 2   # the 12B sampler at 576x1008x49: none and fp8 + fp8_matmul, compiled
#
# Logs go to $OUT (the device tool's output folder) or /tmp/gpu_session. Needs diffusers importable (on the lent
# H200: carry the wheels, see benchmarks/RESULTS.md). FlashAttention 3 is measured too when flash_attn_interface
# is importable (its build recipe is in RESULTS.md).
set -u
phase=${1:?usage: gpu_session.sh 1|2}
out=${OUT:-/tmp/gpu_session}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

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
else
  echo "unknown phase $phase: use 1 or 2" >&2
  exit 2
fi
