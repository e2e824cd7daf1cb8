#!/usr/bin/env bash
# Sets up .venv/ and runs cartag on the embedded default: SQLite under
# $CARTAG_DATA_DIR (default ./cartag-data), in-process job worker, bundled model.
# On the first run it creates an admin API key and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARTAG_DATA_DIR=${CARTAG_DATA_DIR:-$PWD/cartag-data}
# Creates the data dir; a read-only or full one (or an unreachable database) stops here
# with what is wrong and how to fix it (exit 2).
.venv/bin/cartag db check
if [ ! -f "$CARTAG_DATA_DIR/admin.key" ]; then
  .venv/bin/cartag keys create --role admin --name local-admin | tail -n 1 > "$CARTAG_DATA_DIR/admin.key"
  chmod 600 "$CARTAG_DATA_DIR/admin.key"
  echo "admin API key (also in $CARTAG_DATA_DIR/admin.key): $(cat "$CARTAG_DATA_DIR/admin.key")"
fi
BASE="http://${CARTAG_HOST:-127.0.0.1}:${CARTAG_PORT:-8000}"
echo "cartag at $BASE: API docs $BASE/docs, fix tags $BASE/fix, review $BASE/review, monitor $BASE/monitor"
echo "try it on local photos: .venv/bin/cartag classify-files PHOTOS_FOLDER --advertiser demo"
exec .venv/bin/cartag serve --host "${CARTAG_HOST:-127.0.0.1}" --port "${CARTAG_PORT:-8000}"
