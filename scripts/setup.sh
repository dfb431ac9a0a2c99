#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv from nothing but python3 >= 3.10.
# Usage: bash scripts/setup.sh   (then use .venv/bin/proteus and .venv/bin/python -m pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "error: Proteus needs Python >= 3.10; $PY is $("$PY" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "Proteus installed in .venv: try .venv/bin/proteus envs"
