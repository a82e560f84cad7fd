#!/usr/bin/env bash
# The whole test suite: services up, lint, build once, the parallel suite,
# then the serial step (tests that stop or restart shared services).
# Usage: scripts/test.sh [--no-lint]
set -euo pipefail
cd "$(dirname "$0")/.."
lint=1
[ "${1:-}" = "--no-lint" ] && lint=0

scripts/ensure-services.sh
scripts/python-env.sh >/dev/null   # real Celery client for interop tests

if [ $lint = 1 ]; then
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
cargo build --workspace --all-targets --locked

if cargo nextest --version >/dev/null 2>&1; then
  # Tests mostly wait on RabbitMQ and the databases: run several at once.
  cargo nextest run --workspace --locked --no-fail-fast --test-threads 4
  cargo nextest run --workspace --locked --no-fail-fast --run-ignored only --test-threads 2 --no-tests pass
else
  cargo test --workspace --locked --no-fail-fast -- --test-threads 4
  cargo test --workspace --locked --no-fail-fast -- --ignored --test-threads 1
fi
cargo test --workspace --locked --doc
# The quickstart and its output are part of the suite too; its log (its
# on-purpose failure's WARN included) is shown only if it does not finish.
# Both examples run as the workspace build above built them.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export CELERIAC_EXAMPLES_BUILT="$target_dir/debug/examples"
if ! quickstart=$(scripts/quickstart.sh 2>&1) || ! grep -q "all done" <<<"$quickstart"; then
  echo "$quickstart"
  echo "scripts/test.sh: the quickstart did not finish" >&2
  exit 1
fi
# So is the workflow example (T1 → (T2, T3) → T4 against a worker).
if ! workflow=$("$CELERIAC_EXAMPLES_BUILT/workflow" 2>&1) ||
  ! grep -q "stored 2 thumbnails" <<<"$workflow"; then
  echo "$workflow"
  echo "scripts/test.sh: examples/workflow.rs did not finish" >&2
  exit 1
fi
rm -f celeriac-workflow.db celeriac-workflow.db-shm celeriac-workflow.db-wal
echo "scripts/test.sh: all passed"
