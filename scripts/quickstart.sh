#!/usr/bin/env bash
# The quickstart: makes sure RabbitMQ is up, then runs a worker, a beat and a producer
# (examples/quickstart.rs) doing real work, with results in SQLite
# (celeriac-quickstart.db). Needs a Rust toolchain and RabbitMQ, nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "quickstart: checking RabbitMQ on 127.0.0.1:5672..."
scripts/ensure-services.sh rabbitmq
# scripts/test.sh has built every example with the workspace already and
# names the directory: building `-p celeriac-examples` alone would resolve
# features apart from the workspace's and compile half of it again.
if [ -n "${CELERIAC_EXAMPLES_BUILT:-}" ]; then
  echo "quickstart: running examples/quickstart.rs"
  exec "$CELERIAC_EXAMPLES_BUILT/quickstart"
fi
echo "quickstart: building the example (the first build takes a few minutes; cargo shows its progress)..."
cargo build -p celeriac-examples --example quickstart
echo "quickstart: running examples/quickstart.rs"
exec cargo run --quiet -p celeriac-examples --example quickstart
