#!/usr/bin/env python3
"""Publish tasks with the real Celery 5 client, for celeriac's interop tests.

The Python -> Rust direction of scripts/celery_interop_check.py: a Celery app (JSON
serializer, no result backend) whose default queue is QUEUE publishes the calls given as a
JSON list (argument --calls, or stdin with --calls -), one object per call:

    {"method": "send_task" | "apply_async" | "delay",   # default send_task
     "name": "tasks.add", "args": [...], "kwargs": {...},
     ...any other key is passed to send_task / apply_async as an option:
     "countdown": 1, "eta": <datetime>, "expires": 300 | <datetime>, "priority": 5,
     "headers": {...}, "task_id": "...", "time_limit": 60, "soft_time_limit": 50, ...}

The list is read with kombu's JSON decoder, so values in kombu's marker form
({"__type__": "datetime" | "uuid" | "decimal" | ..., "__value__": ...}) become real
datetime / UUID / Decimal objects before Celery sees them, exactly as if a Python program
had passed them. "apply_async" and "delay" call a stub task registered under NAME (the
way an app calls its own tasks); "send_task" calls by name.

Celery declares QUEUE itself when publishing, as it does for its default queue (durable,
plus a direct exchange named QUEUE); --queue-type quorum makes it a quorum queue
(task_default_queue_type='quorum').

Prints one JSON object: {"celery_version": ..., "sent": [{"id", "name", "method",
"arg_types", "kwarg_types"}, ...]} (the Python type name of every argument as sent), and
exits 0; on any error prints the traceback to stderr and exits non-zero. Bounded by
--timeout (default 30 s) whatever happens.

Broker: env CELERIAC_BROKER_URL (kombu form), default amqp://guest:guest@127.0.0.1:5672//.

Example:
    echo '[{"name": "tasks.add", "args": [2, 3]}]' |
        "$(scripts/python-env.sh)" scripts/celery_send.py --queue q1 --calls -
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture_celery_fixtures import broker_url  # noqa: E402


def make_app(queue: str, queue_type: str):
    from celery import Celery

    app = Celery("celeriac_send", broker=broker_url(), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_connection_retry_on_startup=False,
        broker_connection_retry=False,
        broker_connection_timeout=10,
        broker_connection_max_retries=1,
        task_publish_retry=False,
    )
    if queue_type == "quorum":
        app.conf.task_default_queue_type = "quorum"
    return app


def stub_task(app, name: str):
    if name not in app.tasks:
        @app.task(name=name, shared=False)
        def _stub(*args, **kwargs):  # never run here: only called remotely
            return None
    return app.tasks[name]


def type_name(value) -> str:
    return type(value).__name__


def send_all(app, calls: list[dict]) -> list[dict]:
    sent = []
    for call in calls:
        call = dict(call)
        method = call.pop("method", "send_task")
        name = call.pop("name")
        args = list(call.pop("args", None) or [])
        kwargs = dict(call.pop("kwargs", None) or {})
        options = call
        if method == "send_task":
            result = app.send_task(name, args=args, kwargs=kwargs, **options)
        elif method == "apply_async":
            result = stub_task(app, name).apply_async(args, kwargs, **options)
        elif method == "delay":
            if options:
                raise ValueError(f"delay takes no options, got {sorted(options)}")
            result = stub_task(app, name).delay(*args, **kwargs)
        else:
            raise ValueError(f"unknown method {method!r}")
        sent.append({
            "id": result.id,
            "name": name,
            "method": method,
            "arg_types": [type_name(a) for a in args],
            "kwarg_types": {k: type_name(v) for k, v in kwargs.items()},
        })
    return sent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--calls", required=True,
                    help="JSON list of calls (kombu JSON), or - to read it from stdin")
    ap.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    ap.add_argument("--timeout", type=float, default=30.0)
    opts = ap.parse_args(argv)

    def watchdog():
        print(f"celery_send: gave up after {opts.timeout:.0f}s", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(opts.timeout, watchdog)
    timer.daemon = True
    timer.start()

    import celery
    from kombu.utils.json import loads

    text = sys.stdin.read() if opts.calls == "-" else opts.calls
    calls = loads(text)
    if not isinstance(calls, list):
        ap.error("--calls must be a JSON list")
    app = make_app(opts.queue, opts.queue_type)
    try:
        sent = send_all(app, calls)
    finally:
        app.close()
        timer.cancel()
    print(json.dumps({"celery_version": celery.__version__, "sent": sent}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
