#!/usr/bin/env bash
# The whole check: lint, format, types, import floors, then the test suite. Run from the repo root
# inside the project's virtual environment (the README's second command does both).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=".venv/bin"
[ -x "$bin/python" ] || bin="$(dirname "$(command -v python3)")"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0
echo "== ruff";          "$bin/ruff" check src tests bench scripts
echo "== ruff format";   "$bin/ruff" format --check src tests bench scripts
echo "== mypy";          "$bin/mypy"
echo "== import-linter"; "$bin/lint-imports"
echo "== pytest";        "$bin/python" -m pytest "$@"
