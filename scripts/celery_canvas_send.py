#!/usr/bin/env python3
"""Send a chain, a group and a chord with the real Celery 5 client, for celeriac's canvas
interop tests (worker/tests/canvas_interop.rs).

Every task is `celeriac.echo` (registered by celeriac workers with --diagnostics, and by
scripts/celery_interop_check.py), sent to QUEUE:

    chain:  echo(1) | echo(2) | echo(3)
    group:  group(echo(10), echo(11), echo(12))
    chord:  chord([echo(20), echo(21)], echo("cb"))

The app's result backend is `cache+memory://` (in this process only): Celery refuses to
send a chord without one; nothing is ever read from it. Prints one JSON object:

    {"chain": [id1, id2, id3], "group": {"id": gid, "members": [...]},
     "chord": {"id": gid, "members": [...], "callback": id}}

Broker: env CELERIAC_BROKER_URL (kombu form), default amqp://guest:guest@127.0.0.1:5672//.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery_send import make_app  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", required=True)
    opts = ap.parse_args(argv)
    from celery import chain, chord, group

    app = make_app(opts.queue, "classic")
    app.conf.result_backend = "cache+memory://"
    echo = lambda *args: app.signature("celeriac.echo", args=args)  # noqa: E731

    last = chain(echo(1), echo(2), echo(3)).apply_async()
    steps = []
    node = last
    while node is not None:
        steps.insert(0, node.id)
        node = node.parent
    members = group(echo(10), echo(11), echo(12)).apply_async()
    callback = chord([echo(20), echo(21)], echo("cb")).apply_async()
    header = callback.parent
    print(json.dumps({
        "chain": steps,
        "group": {"id": members.id, "members": [r.id for r in members.results]},
        "chord": {"id": header.id, "members": [r.id for r in header.results],
                  "callback": callback.id},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
