#!/usr/bin/env bash
# Download, here (with network), the wheels that eval/gpu_check.sh installs offline on a GPU box that has
# PyTorch and transformers but not alignkit's other needs. Pure-Python wheels plus pydantic-core, for the box's
# platform (manylinux x86_64) and Python version, at the versions of constraints.txt:
#   eval/gpu_wheels.sh [DEST]            # DEST defaults to .whl (git-ignored); PYVER=3.12 by default
# Then run eval/gpu_check.sh on the box with the folder beside the repository (WHEELS=DEST).
set -euo pipefail
DEST=${1:-.whl}
PYVER=${PYVER:-3.12}   # the GPU box's Python (the device README reports 3.12.3); pydantic-core and multiprocess depend on it
PIP=${PIP:-python3 -m pip}
# pydantic + pydantic-core (config validation), annotated-types, typing-inspection, typing_extensions (pydantic
# needs >= 4.16, newer than torch asks for): alignkit.config
# datasets + dill + multiprocess: alignkit's data loading and training (the box has pyarrow, pandas, xxhash, fsspec)
# trl: the ZeRO-3 reference/sampler helpers (and TRL's colocate path in bench_generate, which also needs vLLM)
# transformers 5.19.0: the version alignkit pins (the box has 5.17; it needs huggingface_hub>=1.31, tokenizers>=0.23.1 there)
WHEELS=(pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 trl==1.16.0 transformers==5.19.0)
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
$PIP download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${platforms[@]}" \
  -d "$DEST" "${WHEELS[@]}"
# Not here, and why: DeepSpeed publishes no wheels (sdist only; `pip wheel deepspeed==0.19.8 --no-deps` builds a
# pure-Python one that JIT-compiles its ops with the box's nvcc, if ZeRO-3 checks are wanted); vLLM's CUDA wheel
# is ~400 MB with its own torch pin, beyond what travels to the box (64 MiB) and not for torch 2.11.
du -sh "$DEST"
ls "$DEST"
