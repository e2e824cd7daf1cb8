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
# The review page's browser tests drive Debian's chromium (Playwright downloads no browser).
if [ "${1:-}" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests (apt-get)..."
    # Not fatal: without chromium only the browser tests are skipped (failed under CI=true).
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } ||
      echo "hint: apt-get could not install chromium; the browser tests need /usr/bin/chromium" >&2
  else
    echo "hint: the browser tests need chromium at /usr/bin/chromium:" \
      "sudo apt-get install chromium (they are skipped without it, except under CI=true)" >&2
  fi
fi
