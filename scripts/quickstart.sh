#!/usr/bin/env bash
# The quickstart: makes sure RabbitMQ is up, then runs a worker, a beat and a producer
# (examples/quickstart.rs) doing real work, with results in SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-services.sh >/dev/null
exec cargo run --quiet -p celeriac-examples --example quickstart
