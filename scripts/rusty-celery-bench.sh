#!/usr/bin/env bash
# The Rust peer, rusty-celery (the `celery` crate 0.5 from crates.io), on the
# local RabbitMQ next to `celeriac-bench` in the same run: no-op tasks end to
# end, results off, same task count, producers and prefetch. Builds the peer
# program in scripts/rusty-celery-bench/ (a cargo project of its own) into
# target/rusty-celery-bench/ on first use. Each run also times both from
# just before a publish to the task's start, 2,000 tasks at 500/s.
# Usage: scripts/rusty-celery-bench.sh [--tasks N] [--producers P] [--prefetch F] [--runs R]
# rusty-celery acknowledges before running a task and publishes without
# confirms; celeriac confirms every publish and acks after the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=40000 producers=512 prefetch=128 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) tasks=$2; shift 2 ;;
    --producers) producers=$2; shift 2 ;;
    --prefetch) prefetch=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "rusty-celery-bench: unknown option $1" >&2; exit 2 ;;
  esac
done
broker=${CELERIAC_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
(cd scripts/rusty-celery-bench &&
  CARGO_TARGET_DIR=../../target/rusty-celery-bench cargo build --release --quiet)
cargo build --release --quiet -p celeriac-bench -p celeriac-worker
peer=target/rusty-celery-bench/release/rusty-celery-bench
# celeriac's prefetch is concurrency x multiplier: 16 x (prefetch / 16).
multiplier=$(( (prefetch + 15) / 16 ))
for run in $(seq 1 "$runs"); do
  r=$(RUST_LOG=warn timeout 600 "$peer" "$tasks" "$producers" "$prefetch" "$broker" 2000 500 | tail -1)
  c=$(timeout 600 target/release/celeriac-bench --tasks "$tasks" --producers "$producers" \
      --concurrency 16 --prefetch-multiplier "$multiplier" --latency-tasks 2000 --rate 500 --json | tail -1)
  python3 - "$run" "$r" "$c" <<'PY'
import json, sys
run, r, c = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"run {run}: rusty-celery {r['e2e_per_s']:,.0f} tasks/s end to end "
      f"({r['process_cpu_s_per_1k']:.3f} s CPU per 1,000, producer and worker); "
      f"celeriac {c['e2e_per_s']:,.0f} tasks/s "
      f"({c['producer_cpu_s_per_1k'] + c['worker_cpu_s_per_1k']:.3f} s CPU per 1,000, producer and worker; "
      f"best plain lapin reference {c['reference_per_s']:,.0f} msgs/s); "
      f"celeriac / rusty-celery {c['e2e_per_s'] / r['e2e_per_s']:.2f}; "
      f"latency p50 / p99 / max: rusty-celery {r['latency_p50_ms']:.2f} / {r['latency_p99_ms']:.2f} / "
      f"{r['latency_max_ms']:.2f} ms, celeriac {c['latency_p50_ms']:.2f} / {c['latency_p99_ms']:.2f} / "
      f"{c['latency_max_ms']:.2f} ms")
PY
done
