#!/usr/bin/env bash
# Creates .venv/ at the repo root and installs cartag into it (idempotent).
# Usage: scripts/setup.sh [dev]   -- "dev" adds the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
stamp=".venv/.cartag-installed${extra}"
# Reinstall only when the dependency list changed.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml (a CPU build); installing it first keeps pip
  # from ever resolving a newer, multi-GB build through another package.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".${extra}"
  touch "$stamp"
fi
