#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, lint, format, types, import layers, tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k alarms`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh

echo "== ruff (lint)"
ruff check wtbi_monitor wtbi_devtools tests scripts
echo "== ruff (format)"
ruff format --check wtbi_monitor wtbi_devtools tests scripts
echo "== mypy --strict"
mypy
echo "== import-layer contract"
lint-imports
echo "== pytest"
python -m pytest "$@"
