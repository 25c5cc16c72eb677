#!/usr/bin/env bash
# The main job: set up (first run only) and generate with the default model and a Top-H sampler.
# Any extra arguments go to `entrodec generate`, e.g. `bash scripts/demo.sh --seed 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/entrodec generate "Write a haiku about rain." --temperature 1.5 --top-h 0.4 --seed 0 --max-new-tokens 64 --stats "$@"
