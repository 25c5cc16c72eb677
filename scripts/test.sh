#!/usr/bin/env bash
# The whole test suite: set up (first run only), then pytest. Extra arguments go to pytest (and then
# only they run).
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRODEC_EXTRAS=test bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
# Without a GPU the CUDA kernels' tests were skipped above: run them in Numba's CUDA simulator, which
# must be switched on before numba is imported, hence a process of their own.
if [ $# -eq 0 ] && ! .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "[test] no GPU: the CUDA kernels' tests in Numba's CUDA simulator"
    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python -m pytest -q -m cuda tests/test_kernels_cuda.py
fi
