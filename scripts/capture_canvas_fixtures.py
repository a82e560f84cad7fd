#!/usr/bin/env python3
"""Capture the messages real Celery 5 publishes for canvases (chain, group, chord, nested)
as celeriac test fixtures, and the dict (JSON) form of each canvas.

Run with the project's virtualenv:

    "$(scripts/python-env.sh)" scripts/capture_canvas_fixtures.py

No broker is needed: the app uses the in-memory transport and the `cache+memory://`
result backend (chords need one), and every message is taken from Celery's
`before_task_publish` signal, in publish order. Ids are made deterministic by numbering
every uuid Celery asks for, so a case's ids read `00000000-0000-4000-8000-<n>`. The
`reply_to` option and property (a per-process id) are dropped.

Writes `producer/tests/fixtures/canvas/<case>.json`:
`{"case", "expression", "celery_version", "canvas": <dict form>, "messages": [{"routing_key",
"headers": {task, id, group, group_index, root_id, parent_id}, "body": [args, kwargs, embed]}]}`.
"""
from __future__ import annotations

import itertools
import json
import os
import sys

import celery
import celery.app.base
import celery.app.task
import celery.canvas
from celery import Celery, chain, chord, group, signals

OUT = os.path.join(os.path.dirname(__file__), "..", "producer", "tests", "fixtures", "canvas")
counter = itertools.count(1)


def fake_uuid() -> str:
    return f"00000000-0000-4000-8000-{next(counter):012d}"


for module in (celery.canvas, celery.app.base, celery.app.task):
    module.uuid = fake_uuid

app = Celery("fixtures", broker="memory://", backend="cache+memory://")
app.conf.task_default_queue = "celery"


@app.task(name="tasks.add")
def add(x, y):
    return x + y


@app.task(name="tasks.mul")
def mul(x, y):
    return x * y


@app.task(name="tasks.tsum")
def tsum(values):
    return sum(values)


@app.task(name="tasks.on_error")
def on_error(*args):
    return None


captured: list[dict] = []
HEADERS = ("task", "id", "group", "group_index", "root_id", "parent_id")


def strip(value):
    """Drops reply_to (a per-process id) wherever it is."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k != "reply_to"}
    if isinstance(value, (list, tuple)):
        return [strip(v) for v in value]
    return value


@signals.before_task_publish.connect
def capture(sender=None, body=None, exchange=None, routing_key=None, headers=None, **_):
    captured.append({
        "routing_key": routing_key,
        "headers": {k: headers.get(k) for k in HEADERS},
        "body": strip(json.loads(json.dumps(body))),
    })


CASES = {
    "chain3": ("chain(add.s(1, 2), add.s(3), mul.s(4))",
               lambda: chain(add.s(1, 2), add.s(3), mul.s(4))),
    "group2": ("group(add.s(1, 2), add.s(3, 4))",
               lambda: group(add.s(1, 2), add.s(3, 4))),
    "chord2": ("chord([add.s(1, 2), add.s(3, 4)], tsum.s())",
               lambda: chord([add.s(1, 2), add.s(3, 4)], tsum.s())),
    "diamond": ("chain(add.s(1, 2), group(add.s(3), add.s(4)), tsum.s())",
                lambda: chain(add.s(1, 2), group(add.s(3), add.s(4)), tsum.s())),
    "group_then_task": ("chain(group(add.s(1, 2), add.s(3, 4)), tsum.s(), mul.s(10))",
                        lambda: chain(group(add.s(1, 2), add.s(3, 4)), tsum.s(), mul.s(10))),
    "group_of_chains": ("group(chain(add.s(1, 2), mul.s(3)), add.s(5, 6))",
                        lambda: group(chain(add.s(1, 2), mul.s(3)), add.s(5, 6))),
    "chord_in_chain": ("chain(add.s(1, 2), chord([add.s(3), add.s(4)], tsum.s()), mul.s(2))",
                       lambda: chain(add.s(1, 2), chord([add.s(3), add.s(4)], tsum.s()), mul.s(2))),
    "chain_as_chord_body": ("chord([add.s(1, 2), add.s(3, 4)], chain(tsum.s(), mul.s(2)))",
                            lambda: chord([add.s(1, 2), add.s(3, 4)], chain(tsum.s(), mul.s(2)))),
    "immutable_and_errback": (
        "chain(add.s(1, 2), add.si(5, 6), mul.s(2)).set(link_error=[on_error.s()])",
        lambda: chain(add.s(1, 2), add.si(5, 6), mul.s(2)).set(link_error=[on_error.s()])),
}


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    for case, (expression, build) in CASES.items():
        global counter
        counter = itertools.count(1)
        captured.clear()
        canvas = build()
        as_dict = strip(json.loads(json.dumps(canvas)))
        canvas.apply_async()
        with open(os.path.join(OUT, f"{case}.json"), "w") as f:
            json.dump({
                "case": case,
                "expression": expression,
                "celery_version": celery.__version__,
                "canvas": as_dict,
                "messages": list(captured),
            }, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"{case}: {len(captured)} message(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
