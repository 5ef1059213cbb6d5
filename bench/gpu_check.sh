#!/usr/bin/env bash
# One-shot GPU check (see bench/gpu_check.py). Installs the wheels carried in .whl/ (git-ignored:
# transformers 5.24 and pydantic with its dependencies) into /tmp/site, then runs the check.
# Writes "$OUT/gpu_check.json"; the exit code is the script's.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
"$PY" bench/gpu_check.py --out "$OUT/gpu_check.json" "$@"
exit $?
