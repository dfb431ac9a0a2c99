#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv from nothing but python3 >= 3.11,
# with the tested versions of every dependency (constraints.txt; pyproject.toml has the ranges).
# Usage: bash scripts/setup.sh   (then use .venv/bin/proteus and .venv/bin/python -m pytest)
#        PROTEUS_EXTRAS=bench bash scripts/setup.sh   also installs EnvPool, the peer of `proteus bench sim`
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: Proteus needs Python >= 3.11; $PY is $("$PY" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# A .venv made before the pins may hold MuJoCo 4's split wheels: mujoco-core owns the files under
# mujoco/ that the pinned mujoco wheel writes again, so remove the whole MuJoCo set before reinstalling.
if .venv/bin/python -m pip show --quiet mujoco-core >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall --quiet --yes mujoco mujoco-core mujoco-studio mujoco-mjx
fi
.venv/bin/python -m pip install --quiet -e ".[test${PROTEUS_EXTRAS:+,$PROTEUS_EXTRAS}]" -c constraints.txt
echo "Proteus installed in .venv: try .venv/bin/proteus envs"
