#!/usr/bin/env bash
# Sets up .venv/ with the dev tools, then runs lint, type checks and the whole test suite.
# Tests marked "services" use PostgreSQL on 127.0.0.1:5432 (database test); without it
# they skip, except under CI=true where they must run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
