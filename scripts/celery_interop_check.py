#!/usr/bin/env python3
"""Check that task messages in a queue are understood by the real Celery 5 worker code.

The reverse direction of scripts/capture_celery_fixtures.py: something (celeriac's Rust
producer, in a test) puts task messages into an AMQP queue; this script takes N of them and
runs them through Celery's own consumer-side code, printing one JSON line per message:

    {"id": ..., "task": ..., "args": [...], "kwargs": {...}, "eta": ..., "expires": ...,
     ..., "ok": true, "outcome": "success", "result": ...}
    {"ok": false, "error": "...", ...}

and exits 0 only if N messages were handled and every one is ok. args/kwargs/result are
printed in kombu's JSON form (datetime, Decimal, UUID, bytes as {"__type__", "__value__"}).

Modes:

  --mode worker (default)  A real Celery WorkController runs in this process (solo pool,
      in a thread, as celery.contrib.testing.worker does; no mingle/gossip/heartbeat, remote
      control off) consuming QUEUE. Messages go through Celery's consumer, strategy,
      Request and tracer exactly as in `celery worker`, and the tasks below are executed.
      A message counts when its outcome is known: success, failure, retry, revoked
      (e.g. expired), unknown task, rejected (invalid) or undecodable. Follow-up messages
      the worker publishes itself (link callbacks, chain steps, retries) go back to QUEUE
      (it is the app's default queue) and count too if handled before N is reached.
      ok is true only for outcome "success" (use --ok-outcomes to widen). Lines for
      messages handled after N were counted carry "extra": true and do not count.
      An eta/countdown message is held by the worker until due: give --timeout enough.
      The worker declares QUEUE as Celery does (durable, classic, no arguments, plus
      an exchange named QUEUE bound with key QUEUE); use --queue-type quorum /
      --max-priority N to match a queue declared that way, or --no-declare (still give
      --queue-type quorum for a quorum queue: Celery then uses per-consumer QoS, and
      RabbitMQ closes the connection, "does not support global qos", otherwise). With
      quorum, the worker's DelayedDelivery step declares kombu's celery_delayed_* topology;
      what this run created is deleted afterwards unless --keep-delayed-delivery.

  --mode decode  No worker: each message is fetched with basic_get through kombu, and fed
      to the same checks the worker's consumer does (protocol-2 `task` header, kombu
      deserialisation with accept=json) and to celery.worker.request.Request (which parses
      eta/expires, embed, timelimit...). Nothing is executed; any task name is accepted.
      Messages are acked (consumed) unless --requeue.

Registered tasks (worker mode executes them):
  tasks.add(x, y=0) -> x + y          tasks.mul(x, y=1) -> x * y
  tasks.tsum(values) -> sum(values)   tasks.noargs() -> "ok"
  tasks.quiet(x) -> x (ignore_result=True)   tasks.on_error(*a, **kw) -> None
  celeriac.echo(*args, **kwargs) -> [args, kwargs]
  tasks.typeof(*args, **kwargs) -> {"args": [type names], "kwargs": {name: type name}}
      (shows that kombu's markers reached the task as datetime, UUID, Decimal...)
  celeriac.fail(*args, **kwargs) raises RuntimeError (outcome "failure")

Broker: env CELERIAC_BROKER_URL (kombu form), default amqp://guest:guest@127.0.0.1:5672//.
Always bounded: --timeout (default 30 s) for the messages, plus a hard watchdog.

Example:
    "$(scripts/python-env.sh)" scripts/celery_interop_check.py --queue q1 --count 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capture_celery_fixtures import broker_url  # noqa: E402

# Headers Celery itself sets on a protocol-2 message (anything else is "custom").
CELERY_HEADERS = {
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
}

_out_lock = threading.Lock()


def emit(obj: dict) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()


def wire_json(value):
    """Python value -> JSON in kombu's marker form."""
    from kombu.utils.json import dumps

    try:
        return json.loads(dumps(value))
    except Exception:  # not JSON-able: say what it was
        return repr(value)


def iso(dt):
    return dt.isoformat() if dt is not None else None


def make_app(queue: str, opts):
    from celery import Celery
    from kombu import Exchange, Queue

    app = Celery("celeriac_interop", broker=broker_url(), set_as_current=False)
    queue_arguments = {}
    if opts.queue_type == "quorum":
        queue_arguments["x-queue-type"] = "quorum"
    if opts.max_priority is not None:
        queue_arguments["x-max-priority"] = opts.max_priority
    kq = Queue(
        queue,
        Exchange(queue, type="direct"),
        routing_key=queue,
        queue_arguments=queue_arguments or None,
        no_declare=opts.no_declare,
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_default_queue=queue,
        task_queues=[kq],
        broker_connection_retry_on_startup=False,
        broker_connection_retry=False,
        broker_connection_timeout=10,
        broker_connection_max_retries=1,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_prefetch_multiplier=1,
        worker_redirect_stdouts=False,
        task_publish_retry=False,
    )
    if opts.queue_type == "quorum":
        app.conf.task_default_queue_type = "quorum"

    @app.task(name="tasks.add")
    def add(x, y=0):
        return x + y

    @app.task(name="tasks.mul")
    def mul(x, y=1):
        return x * y

    @app.task(name="tasks.tsum")
    def tsum(values):
        return sum(values)

    @app.task(name="tasks.noargs")
    def noargs():
        return "ok"

    @app.task(name="tasks.quiet", ignore_result=True)
    def quiet(x):
        return x

    @app.task(name="tasks.on_error")
    def on_error(*args, **kwargs):
        return None

    @app.task(name="celeriac.echo")
    def echo(*args, **kwargs):
        return [list(args), kwargs]

    @app.task(name="tasks.typeof")
    def typeof(*args, **kwargs):
        return {"args": [type(a).__name__ for a in args],
                "kwargs": {k: type(v).__name__ for k, v in kwargs.items()}}

    @app.task(name="celeriac.fail")
    def fail(*args, **kwargs):
        raise RuntimeError("celeriac.fail called")

    return app, kq


def summarize_request(req) -> dict:
    """What Celery's worker Request understood of a message."""
    rd = req.request_dict
    _args, _kwargs, embed = req._payload
    embed = embed or {}
    headers = req.message.headers or {}
    props = req.message.properties or {}
    return {
        "id": req.id,
        "task": req.type,
        "name": req.name,  # shadow name when set
        "args": wire_json(list(req.args)),
        "kwargs": wire_json(dict(req.kwargs)),
        "eta": iso(req.eta),
        "expires": iso(req.expires),
        "eta_header": rd.get("eta"),
        "expires_header": rd.get("expires"),
        "retries": rd.get("retries", 0),
        "timelimit": rd.get("timelimit"),
        "time_limits": list(getattr(req, "time_limits", None) or []) or None,
        "group": rd.get("group"),
        "group_index": rd.get("group_index"),
        "root_id": req.root_id,
        "parent_id": req.parent_id,
        "origin": rd.get("origin"),
        "ignore_result": req.ignore_result,
        "argsrepr": req.argsrepr,
        "kwargsrepr": req.kwargsrepr,
        "callbacks": wire_json(embed.get("callbacks")),
        "errbacks": wire_json(embed.get("errbacks")),
        "chain": wire_json(embed.get("chain")),
        "chord": wire_json(embed.get("chord")),
        "reply_to": req.reply_to,
        "correlation_id": req.correlation_id,
        "priority": props.get("priority"),
        "delivery_mode": props.get("delivery_mode"),
        "content_type": req.content_type,
        "content_encoding": req.content_encoding,
        "custom_headers": wire_json({k: v for k, v in headers.items()
                                     if k not in CELERY_HEADERS}),
    }


def message_ident(message) -> dict:
    headers = getattr(message, "headers", None) or {}
    props = getattr(message, "properties", None) or {}
    out = {"id": headers.get("id") or props.get("correlation_id")}
    if "task" in headers:
        out["task"] = headers.get("task")
    return out


# --------------------------------------------------------------------------------------
# decode mode

def run_decode(opts) -> int:
    from celery.exceptions import InvalidTaskError
    from celery.worker.request import Request
    from kombu import Connection, Queue
    from kombu.exceptions import ContentDisallowed, DecodeError

    app, _ = make_app(opts.queue, opts)
    failures = handled = 0
    deadline = time.monotonic() + opts.timeout
    with Connection(broker_url(), connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        q = Queue(opts.queue, channel=channel, no_declare=True)
        while handled < opts.count:
            try:
                message = q.get(no_ack=False, accept=["application/json"])
            except Exception as exc:  # e.g. NOT_FOUND: no such queue
                emit({"ok": False, "error": f"basic_get failed: {exc!r}"})
                return 2
            if message is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
                continue
            handled += 1
            line = check_one_decoded(app, message, Request, InvalidTaskError,
                                     ContentDisallowed, DecodeError)
            if not line["ok"]:
                failures += 1
            emit(line)
            if opts.requeue:
                message.requeue()
            else:
                message.ack()
    if handled < opts.count:
        emit({"ok": False, "error": f"timeout: only {handled} of {opts.count} messages "
                                    f"arrived in {opts.timeout}s"})
        failures += 1
    return 1 if failures else 0


def check_one_decoded(app, message, Request, InvalidTaskError, ContentDisallowed,
                      DecodeError) -> dict:
    ident = message_ident(message)
    headers = message.headers
    # As celery.worker.consumer.Consumer.create_task_handler.on_task_received:
    if not isinstance(headers, dict) or "task" not in headers:
        return dict(ident, ok=False, outcome="unknown_message",
                    error="no 'task' header: not a protocol-2 task message")
    name = headers["task"]
    registered = name in app.tasks
    if not registered:
        # Decode-only: accept any name with a permissive stand-in task.
        @app.task(name=name, shared=False)
        def _standin(*args, **kwargs):
            return None
    try:
        req = Request(message, app=app, task=app.tasks[name], hostname="celery@interop")
        summary = summarize_request(req)
        # Properties Celery's producer always sets; the worker tolerates their absence
        # but a celeriac message should look like Celery's.
        problems = []
        if message.content_type != "application/json":
            problems.append(f"content_type {message.content_type!r}")
        if message.properties.get("correlation_id") != req.id:
            problems.append("correlation_id != id")
        # celeriac leaves out headers at the value Celery assumes when absent
        # (null, retries 0, timelimit [null, null], ...); these it always sends.
        for key in ("lang", "id", "root_id", "argsrepr", "kwargsrepr", "origin"):
            if key not in headers:
                problems.append(f"missing header {key!r}")
        line = dict(summary, registered=registered, ok=not problems, outcome="decoded")
        if problems:
            line["error"] = "; ".join(problems)
        return line
    except (InvalidTaskError, ContentDisallowed) as exc:
        return dict(ident, ok=False, outcome="rejected", error=repr(exc))
    except DecodeError as exc:
        return dict(ident, ok=False, outcome="decode_error", error=repr(exc))
    except Exception as exc:  # anything else Celery would choke on
        return dict(ident, ok=False, outcome="error", error=repr(exc))


# --------------------------------------------------------------------------------------
# worker mode

class WorkerRecorder:
    """Collects per-message outcomes from the in-process worker's signals."""

    def __init__(self, count: int, ok_outcomes: set[str]):
        self.count = count
        self.ok_outcomes = ok_outcomes
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.received: dict[str, list[dict]] = {}
        self.results: list[dict] = []

    def _finish(self, line: dict):
        with self.lock:
            if line.get("ok") is None:
                line["ok"] = line.get("outcome") in self.ok_outcomes
            if len(self.results) >= self.count:
                line["extra"] = True  # handled after N were done: report, don't count
                emit(line)
                return
            self.results.append(line)
            emit(line)
            if len(self.results) >= self.count:
                self.done.set()

    def _take(self, task_id: str) -> dict:
        with self.lock:
            pending = self.received.get(task_id)
            if pending:
                return pending.pop(0)
        return {"id": task_id}

    # signal handlers --------------------------------------------------------------
    def on_received(self, sender=None, request=None, **kw):
        try:
            info = summarize_request(request)
        except Exception as exc:
            info = {"id": getattr(request, "id", None), "summary_error": repr(exc)}
        with self.lock:
            self.received.setdefault(request.id, []).append(info)

    def on_postrun(self, sender=None, task_id=None, task=None, retval=None, state=None,
                   **kw):
        line = self._take(task_id)
        outcome = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry"}.get(
            state, str(state).lower())
        line.update(outcome=outcome, ok=None)
        if outcome == "success":
            line["result"] = wire_json(retval)
        else:
            line["error"] = repr(retval)
        self._finish(line)

    def on_revoked(self, sender=None, request=None, terminated=None, signum=None,
                   expired=None, **kw):
        line = self._take(request.id)
        line.update(outcome="revoked", expired=bool(expired), ok=None)
        self._finish(line)

    def on_unknown(self, sender=None, message=None, exc=None, name=None, id=None, **kw):
        self._finish(dict(message_ident(message), task=name, outcome="unknown_task",
                          ok=False, error=f"unregistered task {name!r}"))

    def on_rejected(self, sender=None, message=None, exc=None, **kw):
        self._finish(dict(message_ident(message), outcome="rejected", ok=False,
                          error=repr(exc) if exc else "unknown message format"))

    def on_decode_error(self, message, exc):
        self._finish(dict(message_ident(message), outcome="decode_error", ok=False,
                          error=repr(exc)))


DELAYED_QUEUES = [f"celery_delayed_{level}" for level in range(28)]
DELAYED_EXCHANGES = DELAYED_QUEUES + ["celery_delayed_delivery"]


def existing_entities(conn, kind: str, names: list[str]) -> set[str]:
    """Which of these queues/exchanges exist (passive declares, one channel each)."""
    found = set()
    for name in names:
        ch = conn.channel()
        try:
            if kind == "queue":
                ch.queue_declare(name, passive=True)
            else:
                ch.exchange_declare(name, "topic", passive=True)
            found.add(name)
        except Exception:
            pass
        finally:
            try:
                ch.close()
            except Exception:
                pass
    return found


def run_worker(opts) -> int:
    from celery import signals
    from celery.contrib.testing.worker import TestWorkController, setup_app_for_worker
    from celery.utils.nodenames import anon_nodename
    from celery.worker import state as worker_state
    from celery.worker.consumer import consumer as consumer_mod
    from kombu import Connection

    app, kq = make_app(opts.queue, opts)
    ok_outcomes = set(opts.ok_outcomes.split(","))
    rec = WorkerRecorder(opts.count, ok_outcomes)
    deadline = time.monotonic() + opts.timeout

    # Declare (or check) QUEUE first, exactly as the worker will, so a mismatch is a
    # clean error line instead of a consumer that keeps failing to start.
    created_exchange = False
    delayed_before: tuple[set, set] | None = None
    with Connection(broker_url(), connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        try:
            if opts.no_declare:
                conn.default_channel.queue_declare(opts.queue, passive=True)
            else:
                created_exchange = not existing_entities(conn, "exchange", [opts.queue])
                kq(conn.default_channel).declare()
        except Exception as exc:
            emit({"ok": False, "error": f"queue {opts.queue!r} declare/check failed: "
                                        f"{exc!r}"})
            return 2
        if opts.queue_type == "quorum" and not opts.keep_delayed_delivery:
            # With quorum queues the worker's DelayedDelivery bootstep declares kombu's
            # native delayed-delivery topology; remove afterwards what this run created.
            delayed_before = (existing_entities(conn, "queue", DELAYED_QUEUES),
                              existing_entities(conn, "exchange", DELAYED_EXCHANGES))

    handlers = [
        (signals.task_received, rec.on_received),
        (signals.task_postrun, rec.on_postrun),
        (signals.task_revoked, rec.on_revoked),
        (signals.task_unknown, rec.on_unknown),
        (signals.task_rejected, rec.on_rejected),
    ]
    for sig, fn in handlers:
        sig.connect(fn, weak=False)

    original_on_decode_error = consumer_mod.Consumer.on_decode_error

    def on_decode_error(self, message, exc):
        rec.on_decode_error(message, exc)
        return original_on_decode_error(self, message, exc)

    consumer_mod.Consumer.on_decode_error = on_decode_error

    class WorkController(TestWorkController):
        # Celery's blocking loop (synloop: drain_events(timeout=2), checks for shutdown
        # every cycle) unless --loop async; the kombu hub run from a thread proved
        # unreliable here (stalls, no clean shutdown).
        def should_use_eventloop(self):
            return opts.loop == "async" and super().should_use_eventloop()

    loglevel = os.environ.get("CELERIAC_INTEROP_LOGLEVEL", "error")
    failures = 0
    thread = None
    try:
        # As celery.contrib.testing.worker.start_worker (solo pool, in a thread), but
        # waiting for readiness with a bound, and noticing a worker that died.
        setup_app_for_worker(app, loglevel, None)
        worker = WorkController(
            app=app, concurrency=1, hostname=anon_nodename(), pool="solo",
            loglevel=loglevel, logfile=None, ready_callback=None,
            without_heartbeat=True, without_mingle=True, without_gossip=True,
            queues=[opts.queue],
        )
        thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
        thread.start()
        while not worker._on_started.wait(0.1):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    "worker did not become ready (exit code "
                    f"{getattr(worker, 'exitcode', None)}); see stderr")
        while not rec.done.wait(0.2):
            if not thread.is_alive():
                raise RuntimeError("worker stopped unexpectedly; see stderr")
            if time.monotonic() > deadline:
                break
    except Exception as exc:
        emit({"ok": False, "error": f"worker error: {exc}"})
        failures += 1
    finally:
        if thread is not None:
            worker_state.should_terminate = 0
            thread.join(opts.shutdown_timeout)
            worker_state.should_terminate = None
            if thread.is_alive():
                emit({"ok": False, "error": "worker thread did not stop within "
                                            f"{opts.shutdown_timeout}s"})
                failures += 1
        consumer_mod.Consumer.on_decode_error = original_on_decode_error
        for sig, fn in handlers:
            sig.disconnect(fn)
        app.close()
        cleanup(opts, created_exchange, delayed_before)

    failures += sum(1 for r in rec.results if not r.get("ok"))
    if len(rec.results) < opts.count:
        with rec.lock:
            waiting = [i for infos in rec.received.values() for i in infos]
        for info in waiting:
            emit(dict(info, ok=False, outcome="not_finished",
                      error="received but not finished before the timeout"
                            + (f" (eta {info.get('eta')})" if info.get("eta") else "")))
        emit({"ok": False, "error": f"only {len(rec.results)} of {opts.count} messages "
                                    f"handled (timeout {opts.timeout}s)"})
        failures += 1
    return 1 if failures else 0


def cleanup(opts, created_exchange: bool, delayed_before):
    from kombu import Connection

    try:
        with Connection(broker_url(), connect_timeout=10) as conn:
            ch = conn.default_channel
            if created_exchange and opts.delete_created_exchange:
                ch.exchange_delete(opts.queue)
            if delayed_before is not None:
                queues_before, exchanges_before = delayed_before
                for name in DELAYED_QUEUES:
                    if name not in queues_before:
                        ch.queue_delete(name)
                for name in DELAYED_EXCHANGES:
                    if name not in exchanges_before:
                        ch.exchange_delete(name)
    except Exception as exc:
        print(f"warning: cleanup failed: {exc!r}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Run task messages from an AMQP queue through real Celery code.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the N messages (default 30)")
    ap.add_argument("--mode", choices=("worker", "decode"), default="worker")
    ap.add_argument("--queue-type", choices=("classic", "quorum"), default="classic",
                    help="worker mode: QUEUE's type; also needed with --no-declare for a "
                         "quorum queue (the worker then uses per-consumer QoS; RabbitMQ "
                         "refuses global QoS on quorum queues)")
    ap.add_argument("--max-priority", type=int, default=None,
                    help="worker mode: declare QUEUE with x-max-priority")
    ap.add_argument("--no-declare", action="store_true",
                    help="worker mode: do not declare QUEUE/exchange, it must exist")
    ap.add_argument("--ok-outcomes", default="success",
                    help="worker mode: comma-separated outcomes counted as ok "
                         "(success,failure,retry,revoked)")
    ap.add_argument("--loop", choices=("sync", "async"), default="sync",
                    help="worker mode: Celery's blocking synloop (default) or the kombu "
                         "hub event loop (asynloop, as `celery worker` uses for AMQP)")
    ap.add_argument("--keep-delayed-delivery", action="store_true",
                    help="worker mode, quorum: keep the celery_delayed_* queues/exchanges "
                         "the worker declares (deleted by default if this run created them)")
    ap.add_argument("--requeue", action="store_true",
                    help="decode mode: requeue messages instead of acking them")
    ap.add_argument("--shutdown-timeout", type=float, default=10.0)
    ap.add_argument("--keep-created-exchange", dest="delete_created_exchange",
                    action="store_false",
                    help="worker mode: keep the exchange named QUEUE if this run created it")
    opts = ap.parse_args(argv)
    if opts.count < 1:
        ap.error("--count must be >= 1")

    # Hard bound whatever happens (stuck connect, worker that will not stop, ...).
    hard_limit = opts.timeout + opts.shutdown_timeout + 30

    def watchdog():
        emit({"ok": False, "error": f"watchdog: gave up after {hard_limit:.0f}s"})
        os._exit(3)

    timer = threading.Timer(hard_limit, watchdog)
    timer.daemon = True
    timer.start()
    try:
        rc = run_decode(opts) if opts.mode == "decode" else run_worker(opts)
    finally:
        timer.cancel()
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
