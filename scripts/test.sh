#!/usr/bin/env bash
# The whole test suite: set up (first run only), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRODEC_EXTRAS=test bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
