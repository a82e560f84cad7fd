#!/usr/bin/env bash
# Python Celery 5 on the local RabbitMQ (and PostgreSQL), for comparison with
# `celeriac-bench`: no-op tasks end to end, results off and results in
# PostgreSQL, with Celery's fastest settings. Installs Celery in .venv first.
# Usage: scripts/celery-bench.sh [--tasks N] [--pool prefork|threads]
#        [--concurrency C] [--prefetch-multiplier M] [--results none,postgres] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/python-env.sh)
# Bounded: each run gives up after --timeout seconds (default 180) and cleans
# up its worker, queue and database; this whole script after 15 minutes.
exec timeout --kill-after=10 900 "$python" scripts/celery_bench.py "$@"
