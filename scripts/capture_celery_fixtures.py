#!/usr/bin/env python3
"""Capture real Celery 5 task messages (protocol 2, JSON, AMQP) as celeriac test fixtures.

Run with the project's virtualenv (it pins celery 5.7.0, kombu, pika):

    "$(scripts/python-env.sh)" scripts/capture_celery_fixtures.py

The real Celery client publishes a variety of task messages into a freshly named queue
(`fixtures-<uuid>`, declared by Celery itself as its `task_default_queue`); each raw message
is read back with pika `basic_get` (the raw content-header bytes are kept too, so the AMQP
wire type of every header value is known) and written to
`common/tests/fixtures/celery/<case>.json`. It also records how Celery declares its default
queue (classic, quorum, x-max-priority) in `queue_declare.json`, as RabbitMQ reports it.
All queues and exchanges it creates are deleted at the end.

With `--replay-into QUEUE [case ...]` it instead publishes captured fixtures verbatim into
an existing queue (e.g. to feed celeriac's worker, or scripts/celery_interop_check.py).

Broker: env CELERIAC_BROKER_URL (kombu form), default amqp://guest:guest@127.0.0.1:5672//.
`rabbitmqctl` must be runnable (for the queue-declaration record; --no-rabbitmqctl skips it).

The helpers in the first half (broker URL, pika connection, raw header decoding) are also
imported by scripts/celery_interop_check.py.
"""
from __future__ import annotations

import base64
import os
import struct
from decimal import Decimal
from typing import Any

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"


def broker_url() -> str:
    return os.environ.get("CELERIAC_BROKER_URL") or DEFAULT_BROKER_URL


def broker_parts(url: str | None = None) -> dict:
    """Host, port, user, password and vhost of a kombu-style AMQP URL."""
    from kombu import Connection

    conn = Connection(url or broker_url())
    try:
        info = conn.info()
    finally:
        conn.release()
    return {
        "host": info["hostname"] or "127.0.0.1",
        "port": int(info["port"] or 5672),
        "user": info["userid"] or "guest",
        "password": info["password"] or "guest",
        "vhost": info["virtual_host"] or "/",
    }


def pika_connection(url: str | None = None, timeout: float = 10.0):
    import pika

    p = broker_parts(url)
    params = pika.ConnectionParameters(
        host=p["host"],
        port=p["port"],
        virtual_host=p["vhost"],
        credentials=pika.PlainCredentials(p["user"], p["password"]),
        socket_timeout=timeout,
        blocked_connection_timeout=timeout,
        connection_attempts=1,
        heartbeat=0,
    )
    return pika.BlockingConnection(params)


# --------------------------------------------------------------------------------------
# Raw content-header capture for pika.

_HOOKED = False


def install_pika_raw_properties_hook() -> None:
    """Make every decoded ``pika.spec.BasicProperties`` remember its raw bytes.

    After this, ``props._celeriac_raw`` holds the encoded Basic properties (property flags
    followed by the present fields), exactly as they arrived on the wire.
    """
    global _HOOKED
    if _HOOKED:
        return
    from pika import spec

    original = spec.BasicProperties.decode

    def decode(self, encoded, offset=0):
        self._celeriac_raw = bytes(encoded[offset:])
        return original(self, encoded, offset)

    spec.BasicProperties.decode = decode
    _HOOKED = True


# AMQP 0-9-1 field value types, as RabbitMQ (and py-amqp, which kombu uses) read them.
TYPE_NAMES = {
    b"t": "bool",
    b"b": "int8",
    b"B": "uint8",
    b"s": "int16",
    b"u": "uint16",
    b"I": "int32",
    b"i": "uint32",
    b"l": "int64",
    b"L": "int64(L)",  # py-amqp writes ints outside int32 as 'L' + signed 64-bit
    b"f": "float",
    b"d": "double",
    b"D": "decimal",
    b"S": "longstr",
    b"x": "bytes",
    b"A": "array",
    b"T": "timestamp",
    b"F": "table",
    b"V": "void",
}


class FieldTableDecoder:
    """Decodes an AMQP field table, keeping the type letter of every value."""

    def __init__(self, buf: bytes):
        self.buf = buf

    def table(self, off: int):
        (length,) = struct.unpack_from(">I", self.buf, off)
        off += 4
        end = off + length
        values, types = {}, {}
        while off < end:
            klen = self.buf[off]
            off += 1
            key = self.buf[off : off + klen].decode("utf-8")
            off += klen
            v, t, off = self.value(off)
            values[key] = v
            types[key] = t
        if off != end:
            raise ValueError("field table overran its length")
        return values, types, end

    def array(self, off: int):
        (length,) = struct.unpack_from(">I", self.buf, off)
        off += 4
        end = off + length
        values, types = [], []
        while off < end:
            v, t, off = self.value(off)
            values.append(v)
            types.append(t)
        if off != end:
            raise ValueError("field array overran its length")
        return values, types, end

    def value(self, off: int):
        """Returns (json_value, type_tree, new_offset)."""
        kind = self.buf[off : off + 1]
        off += 1
        name = TYPE_NAMES.get(kind)
        if name is None:
            raise ValueError(f"unknown AMQP field type {kind!r}")
        b = self.buf
        if kind == b"t":
            return b[off] != 0, name, off + 1
        if kind == b"b":
            return struct.unpack_from(">b", b, off)[0], name, off + 1
        if kind == b"B":
            return b[off], name, off + 1
        if kind == b"s":
            return struct.unpack_from(">h", b, off)[0], name, off + 2
        if kind == b"u":
            return struct.unpack_from(">H", b, off)[0], name, off + 2
        if kind == b"I":
            return struct.unpack_from(">i", b, off)[0], name, off + 4
        if kind == b"i":
            return struct.unpack_from(">I", b, off)[0], name, off + 4
        if kind in (b"l", b"L"):
            return struct.unpack_from(">q", b, off)[0], name, off + 8
        if kind == b"f":
            return struct.unpack_from(">f", b, off)[0], name, off + 4
        if kind == b"d":
            return struct.unpack_from(">d", b, off)[0], name, off + 8
        if kind == b"D":
            scale = b[off]
            (raw,) = struct.unpack_from(">i", b, off + 1)
            return str(Decimal(raw).scaleb(-scale)), name, off + 5
        if kind in (b"S", b"x"):
            (n,) = struct.unpack_from(">I", b, off)
            raw = b[off + 4 : off + 4 + n]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "base64:" + base64.b64encode(raw).decode("ascii")
            return text, name, off + 4 + n
        if kind == b"T":
            return struct.unpack_from(">Q", b, off)[0], name, off + 8
        if kind == b"V":
            return None, name, off
        if kind == b"A":
            values, types, off = self.array(off)
            return values, {"array": types}, off
        if kind == b"F":
            values, types, off = self.table(off)
            return values, {"table": types}, off
        raise AssertionError(kind)


def split_basic_properties(raw: bytes) -> dict:
    """Locates the headers table inside raw encoded Basic properties.

    Returns {"flags": int, "headers": {...}, "header_types": {...}, "headers_raw": bytes}
    (headers entries are empty when the headers flag is not set).
    """
    (flags,) = struct.unpack_from(">H", raw, 0)
    if flags & 0x0001:
        raise ValueError("continued property flags are not expected")
    off = 2
    for bit in (0x8000, 0x4000):  # content_type, content_encoding: shortstr
        if flags & bit:
            off += 1 + raw[off]
    out = {"flags": flags, "headers": {}, "header_types": {}, "headers_raw": b""}
    if flags & 0x2000:
        dec = FieldTableDecoder(raw)
        values, types, end = dec.table(off)
        out.update(headers=values, header_types=types, headers_raw=raw[off:end])
    return out


def flat_type(tree: Any) -> str:
    if isinstance(tree, dict):
        return next(iter(tree))
    return tree


def to_jsonable(v: Any) -> Any:
    """pika-decoded header value -> JSON (bytes as utf-8 text)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, dict):
        return {k: to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


# --------------------------------------------------------------------------------------
# Properties of a received message.

PROPERTY_BITS = [
    ("content_type", 0x8000),
    ("content_encoding", 0x4000),
    ("headers", 0x2000),
    ("delivery_mode", 0x1000),
    ("priority", 0x0800),
    ("correlation_id", 0x0400),
    ("reply_to", 0x0200),
    ("expiration", 0x0100),
    ("message_id", 0x0080),
    ("timestamp", 0x0040),
    ("type", 0x0020),
    ("user_id", 0x0010),
    ("app_id", 0x0008),
    ("cluster_id", 0x0004),
]


def _mask_floats(value, types):
    if isinstance(types, dict) and "table" in types and isinstance(value, dict):
        return {k: _mask_floats(v, types["table"].get(k)) for k, v in value.items()}
    if isinstance(types, dict) and "array" in types and isinstance(value, list):
        return [_mask_floats(v, t) for v, t in zip(value, types["array"])]
    if isinstance(types, dict) and isinstance(value, dict):  # top level: key -> type tree
        return {k: _mask_floats(v, types.get(k)) for k, v in value.items()}
    if types in ("float", "double"):
        return "<float>"
    return value


def describe_message(method, props, body: bytes, queue: str | None = None) -> dict:
    """Everything about one basic_get/basic_deliver result, as JSON-ready data.

    Needs install_pika_raw_properties_hook() to have run before the message arrived.
    """
    raw = getattr(props, "_celeriac_raw", None)
    if raw is None:
        raise RuntimeError("pika raw-properties hook not installed")
    split = split_basic_properties(raw)
    flags = split["flags"]
    present = [name for name, bit in PROPERTY_BITS if flags & bit]
    properties = {
        "content_type": props.content_type,
        "content_encoding": props.content_encoding,
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "delivery_mode": props.delivery_mode,
        "priority": props.priority,
        "headers_present": bool(flags & 0x2000),
        "expiration": props.expiration,
        "message_id": props.message_id,
        "timestamp": props.timestamp,
        "type": props.type,
        "user_id": props.user_id,
        "app_id": props.app_id,
        "cluster_id": props.cluster_id,
        "present": present,
    }
    # pika's own decoding must agree with ours, except for float/double values: pika 1.4
    # decodes those as (truncated) ints, a pika bug, so our decoder is the reference.
    pika_headers = _mask_floats(to_jsonable(props.headers or {}), split["header_types"])
    if pika_headers != _mask_floats(split["headers"], split["header_types"]):
        raise AssertionError(
            f"header decoding mismatch:\n pika: {pika_headers}\n ours: {split['headers']}"
        )
    rk = method.routing_key
    if queue and rk == queue:
        rk = "{queue}"
    return {
        "properties": properties,
        "headers": split["headers"],
        "header_types": {k: flat_type(t) for k, t in split["header_types"].items()},
        "header_type_tree": split["header_types"],
        "headers_raw_base64": base64.b64encode(split["headers_raw"]).decode("ascii"),
        "body": body.decode("utf-8"),
        "delivery": {"exchange": method.exchange, "routing_key": rk},
    }


# --------------------------------------------------------------------------------------
# Capture.

import datetime as _dt  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid as _uuid  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = ROOT / "common" / "tests" / "fixtures" / "celery"


def make_app(default_queue: str, url: str | None = None, **conf):
    """A Celery client app configured as a plain user would (JSON, no result backend)."""
    from celery import Celery

    app = Celery("celeriac_fixtures", broker=url or broker_url(), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_default_queue=default_queue,
        broker_connection_retry_on_startup=False,
        broker_connection_timeout=10,
        broker_connection_max_retries=2,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
    app.conf.update(conf)
    return app


class Tasks:
    """The tasks the fixtures call; names are what the Rust side registers."""

    def __init__(self, app):
        @app.task(name="tasks.add")
        def add(x, y=0):
            return x + y

        @app.task(name="tasks.mul")
        def mul(x, y=1):
            return x * y

        @app.task(name="tasks.tsum")
        def tsum(values):
            return sum(values)

        @app.task(name="tasks.on_error")
        def on_error(request, exc, traceback):
            return None

        @app.task(name="celeriac.echo")
        def echo(*args, **kwargs):
            return [list(args), kwargs]

        @app.task(name="tasks.noargs")
        def noargs():
            return "ok"

        @app.task(name="tasks.quiet", ignore_result=True)
        def quiet(x):
            return x

        @app.task(name="tasks.flaky", bind=True, max_retries=5, default_retry_delay=30)
        def flaky(self, x, attempt_note=None):
            raise self.retry(countdown=30)

        self.add, self.mul, self.tsum, self.on_error = add, mul, tsum, on_error
        self.echo, self.noargs, self.quiet, self.flaky = echo, noargs, quiet, flaky


def wire_json(value):
    """A Python value as it appears on the wire in kombu JSON (with __type__ markers)."""
    from kombu.utils.json import dumps

    return json.loads(dumps(value))


def call_of(args=(), kwargs=None):
    return {"args": wire_json(list(args)), "kwargs": wire_json(dict(kwargs or {}))}


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


class Capture:
    def __init__(self, app, queue: str, out_dir: Path, timeout: float = 10.0):
        import celery

        self.app = app
        self.t = Tasks(app)
        self.queue = queue
        self.out_dir = out_dir
        self.timeout = timeout
        self.celery_version = celery.__version__
        self.conn = pika_connection()
        self.ch = self.conn.channel()
        self.written: list[tuple[str, str]] = []
        self.notes: dict[str, str] = {}

    def get_raw(self):
        deadline = time.monotonic() + self.timeout
        while True:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is not None:
                return method, props, body
            if time.monotonic() > deadline:
                raise TimeoutError(f"no message arrived in {self.queue} within {self.timeout}s")
            self.conn.sleep(0.05)

    def capture(self, case: str, description: str, call: dict, expect_id: str | None = None,
                note: str | None = None):
        method, props, body = self.get_raw()
        msg = describe_message(method, props, body, self.queue)
        headers = msg["headers"]
        if expect_id is not None and headers.get("id") != expect_id:
            raise AssertionError(f"{case}: expected task id {expect_id}, got {headers.get('id')}")
        decoded = json.loads(msg["body"])  # marker form, no object hook
        if decoded[0] != call["args"] or decoded[1] != call["kwargs"]:
            raise AssertionError(f"{case}: body args {decoded[:2]} != call {call}")
        fixture = {
            "case": case,
            "description": description,
            "celery_version": self.celery_version,
            "properties": msg["properties"],
            "headers": headers,
            "header_types": msg["header_types"],
            "header_type_tree": msg["header_type_tree"],
            "headers_raw_base64": msg["headers_raw_base64"],
            "body": msg["body"],
            "call": call,
            "delivery": msg["delivery"],
        }
        if note:
            fixture["note"] = note
        (self.out_dir / f"{case}.json").write_text(dump_json(fixture), encoding="utf-8")
        self.written.append((case, description))
        return fixture

    def assert_empty(self, where: str):
        self.conn.sleep(0.3)
        method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
        if method is not None:
            raise AssertionError(
                f"unexpected extra message after {where}: {props.headers} {body[:200]!r}"
            )

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


# Fixed, timezone-aware instants so that headers stay stable between captures.
TZ_PLUS2 = _dt.timezone(_dt.timedelta(hours=2))
ETA_AWARE = _dt.datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=TZ_PLUS2)
ETA_NAIVE = _dt.datetime(2031, 2, 3, 4, 5, 6, 789012)
EXPIRES_AT = _dt.datetime(2032, 7, 8, 9, 10, 11, 121314, tzinfo=_dt.timezone.utc)
FIXED_ID = "7f8c2d6e-1b3a-4c5d-9e0f-a1b2c3d4e5f6"


def run_cases(c: Capture):
    from celery import chain, chord, group

    t = c.t
    app = c.app

    r = t.add.delay(2, 3)
    c.capture("args_positional", "add.delay(2, 3)", call_of([2, 3]), r.id)

    r = t.add.delay(x=2, y=3)
    c.capture("kwargs_only", "add.delay(x=2, y=3)", call_of([], {"x": 2, "y": 3}), r.id)

    r = t.add.delay(2, y=3)
    c.capture("args_and_kwargs", "add.delay(2, y=3)", call_of([2], {"y": 3}), r.id)

    r = t.noargs.delay()
    c.capture("empty_args", "noargs.delay() (task tasks.noargs, no arguments)", call_of(), r.id)

    r = t.add.apply_async((2, 3), countdown=60)
    c.capture("countdown", "add.apply_async((2, 3), countdown=60): eta = now (UTC) + 60 s",
              call_of([2, 3]), r.id)

    r = t.add.apply_async((2, 3), eta=ETA_AWARE)
    c.capture("eta_aware", f"add.apply_async((2, 3), eta=datetime({ETA_AWARE.isoformat()}))",
              call_of([2, 3]), r.id,
              note="eta keeps the caller's offset (+02:00); Celery does not convert to UTC")

    r = t.add.apply_async((2, 3), eta=ETA_NAIVE)
    c.capture("eta_naive", f"add.apply_async((2, 3), eta=datetime({ETA_NAIVE.isoformat()})) "
              "with a naive datetime", call_of([2, 3]), r.id,
              note="a naive eta is sent without offset; the worker reads it in its timezone "
                   "(UTC by default)")

    r = t.add.apply_async((2, 3), expires=EXPIRES_AT)
    c.capture("expires_datetime",
              f"add.apply_async((2, 3), expires=datetime({EXPIRES_AT.isoformat()}))",
              call_of([2, 3]), r.id,
              note="Celery also sets the AMQP expiration property (ms until expires, as a "
                   "string) since 5.x; value depends on capture time")

    r = t.add.apply_async((2, 3), expires=3600)
    c.capture("expires_seconds", "add.apply_async((2, 3), expires=3600): expires = now + 1 h",
              call_of([2, 3]), r.id,
              note="expiration property = '3600000'")

    r = t.add.apply_async((2, 3), priority=7)
    c.capture("priority", "add.apply_async((2, 3), priority=7)", call_of([2, 3]), r.id)

    custom = {
        "x-tenant": "acme",
        "x-attempt": 3,
        "x-big": 2**40,
        "x-flag": True,
        "x-ratio": 0.5,
        "x-none": None,
        "x-list": [1, "two", None],
        "x-nested": {"k": "v", "n": 1},
    }
    r = t.add.apply_async((2, 3), headers=custom)
    c.capture("custom_headers", "add.apply_async((2, 3), headers=" + json.dumps(custom) + ")",
              call_of([2, 3]), r.id,
              note="custom headers are merged into the AMQP headers table next to Celery's "
                   "own; note the AMQP types of bool/float/big int/list/dict values")

    r = t.add.apply_async((2, 3), task_id=FIXED_ID)
    c.capture("explicit_task_id", f"add.apply_async((2, 3), task_id='{FIXED_ID}')",
              call_of([2, 3]), FIXED_ID)

    r = t.add.apply_async((2, 3), shadow="tasks.add.shadowed")
    c.capture("shadow_name", "add.apply_async((2, 3), shadow='tasks.add.shadowed')",
              call_of([2, 3]), r.id)

    r = t.add.apply_async((2, 3), time_limit=60, soft_time_limit=50)
    c.capture("time_limits", "add.apply_async((2, 3), time_limit=60, soft_time_limit=50)",
              call_of([2, 3]), r.id, note="timelimit header is [hard, soft] = [60, 50]")

    r = t.add.apply_async((2, 3), soft_time_limit=30)
    c.capture("soft_time_limit_only", "add.apply_async((2, 3), soft_time_limit=30)",
              call_of([2, 3]), r.id, note="timelimit header is [null, 30]")

    r = t.add.apply_async((2, 3), ignore_result=True)
    c.capture("ignore_result", "add.apply_async((2, 3), ignore_result=True)",
              call_of([2, 3]), r.id)

    r = t.quiet.delay(1)
    c.capture("ignore_result_task_option",
              "quiet.delay(1) where tasks.quiet is declared with ignore_result=True",
              call_of([1]), r.id)

    r = t.add.apply_async((2, 3), link=t.add.s(10))
    c.capture("link", "add.apply_async((2, 3), link=add.s(10))", call_of([2, 3]), r.id)

    r = t.add.apply_async((2, 3), link_error=t.on_error.s())
    c.capture("link_error", "add.apply_async((2, 3), link_error=on_error.s())",
              call_of([2, 3]), r.id)

    r = t.add.apply_async(
        (2, 3),
        link=[t.add.s(10), t.echo.si("done", flag=True).set(countdown=5, priority=3)],
        link_error=[t.on_error.s(), t.echo.si("failed")],
    )
    c.capture("link_multiple",
              "add.apply_async((2, 3), link=[add.s(10), echo.si('done', flag=True)"
              ".set(countdown=5, priority=3)], link_error=[on_error.s(), echo.si('failed')])",
              call_of([2, 3]), r.id)

    r = chain(t.add.s(1, 2), t.add.s(3), t.mul.s(4)).apply_async()
    first_id = r.parent.parent.id
    c.capture("chain3", "chain(add.s(1, 2), add.s(3), mul.s(4)).apply_async(): first message",
              call_of([1, 2]), first_id,
              note="embed.chain holds the remaining steps REVERSED: [mul.s(4), add.s(3)]; "
                   "the worker pops the last one")

    g = group(t.add.s(1, 2), t.add.s(3, 4)).apply_async()
    c.capture("group_member_0", "group(add.s(1, 2), add.s(3, 4)).apply_async(): member 0",
              call_of([1, 2]), g.results[0].id)
    c.capture("group_member_1", "group(add.s(1, 2), add.s(3, 4)).apply_async(): member 1",
              call_of([3, 4]), g.results[1].id)
    c.assert_empty("group")

    # Chords need a result backend; the in-process memory cache backend is enough (the
    # header messages do not carry anything about the backend).
    capp = make_app(c.queue, result_backend="cache+memory://")
    ct = Tasks(capp)
    res = chord([ct.add.s(1, 2), ct.add.s(3, 4)], ct.tsum.s()).apply_async()
    header_ids = [x.id for x in res.parent.results] if res.parent is not None else [None, None]
    desc = ("chord([add.s(1, 2), add.s(3, 4)], tsum.s()).apply_async() (app with "
            "result_backend='cache+memory://'): header member {}")
    c.capture("chord_header_0", desc.format(0), call_of([1, 2]), header_ids[0],
              note="embed.chord holds the body signature; group/group_index set")
    c.capture("chord_header_1", desc.format(1), call_of([3, 4]), header_ids[1])
    c.assert_empty("chord")
    capp.close()

    r = t.add.apply_async((2, 3), retries=2)
    c.capture("retries_apply_async", "add.apply_async((2, 3), retries=2)", call_of([2, 3]),
              r.id)

    capture_retry(c)

    aware = _dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=_dt.timezone.utc)
    naive = _dt.datetime(2024, 1, 2, 3, 4, 5)
    special = [
        aware,
        naive,
        _dt.date(2024, 1, 2),
        _dt.time(3, 4, 5, 6),
        Decimal("12.3400"),
        _uuid.UUID("12345678-1234-5678-1234-567812345678"),
        b"raw bytes",
        b"\xff\x00\xfe",
    ]
    special_kw = {"when": aware, "amount": Decimal("-0.5"), "blob": b"kw"}
    r = t.echo.delay(*special, **special_kw)
    c.capture("kombu_json_types",
              "echo.delay(datetime(2024,1,2,3,4,5,678901,tzinfo=utc), datetime(2024,1,2,3,4,5), "
              "date(2024,1,2), time(3,4,5,6), Decimal('12.3400'), "
              "UUID('12345678-1234-5678-1234-567812345678'), b'raw bytes', b'\\xff\\x00\\xfe', "
              "when=<that datetime>, amount=Decimal('-0.5'), blob=b'kw')",
              call_of(special, special_kw), r.id,
              note="kombu JSON markers: datetime/date/time isoformat, decimal str, uuid "
                   "{'hex': ...}, utf-8 bytes as 'bytes', other bytes as 'base64'")

    text = "héllo wörld ✓ 日本語 🎉"
    r = t.echo.delay(text, key="ñandú")
    c.capture("unicode", f"echo.delay({text!r}, key='ñandú')",
              call_of([text], {"key": "ñandú"}), r.id,
              note="the body is ASCII-only JSON (\\u escapes, surrogate pairs for non-BMP); "
                   "argsrepr/kwargsrepr headers carry raw UTF-8")

    scalars = [0, -1, 2**53, 2**63 - 1, 1.5, -0.0, 1e300, True, False, None, "", [], {}]
    r = t.echo.delay(*scalars)
    c.capture("json_scalars", "echo.delay(0, -1, 2**53, 2**63-1, 1.5, -0.0, 1e300, True, "
              "False, None, '', [], {})", call_of(scalars), r.id)

    long_arg = "x" * 2000
    r = t.echo.delay(long_arg)
    c.capture("long_argsrepr", "echo.delay('x' * 2000)", call_of([long_arg]), r.id,
              note="argsrepr is truncated by saferepr (argsrepr_maxsize 1024)")

    r = app.send_task("remote.unregistered_task", args=[1, "a"], kwargs={"k": [1, 2]})
    c.capture("send_task_by_name",
              "app.send_task('remote.unregistered_task', args=[1, 'a'], kwargs={'k': [1, 2]})",
              call_of([1, "a"], {"k": [1, 2]}), r.id)

    capture_rpc_reply_to(c)
    c.assert_empty("all cases")


def capture_retry(c: Capture):
    """A retry message exactly as a worker publishes it: run tasks.flaky through Celery's
    own tracer (the code a worker's pool runs) with a request built by
    celery.worker.request.Request from the captured original message."""
    from celery.app.trace import build_tracer
    from celery.worker.request import Request
    from kombu.message import Message

    t = c.t
    orig = t.flaky.apply_async((5,), {"attempt_note": "first"}, retries=1,
                               time_limit=120, soft_time_limit=100)
    fx = c.capture("retry_original",
                   "flaky.apply_async((5,), {'attempt_note': 'first'}, retries=1, "
                   "time_limit=120, soft_time_limit=100): the message that is then retried",
                   call_of([5], {"attempt_note": "first"}), orig.id)
    props = fx["properties"]
    msg = Message(
        body=fx["body"].encode("utf-8"),
        delivery_tag=1,
        content_type=props["content_type"],
        content_encoding=props["content_encoding"],
        delivery_info={"exchange": "", "routing_key": c.queue, "redelivered": False,
                       "priority": props["priority"]},
        properties={k: props[k] for k in ("correlation_id", "reply_to", "delivery_mode",
                                          "priority")},
        headers=fx["headers"],
        accept=["application/json"],
    )
    req = Request(msg, app=c.app, task=t.flaky, hostname="celery@fixtures")
    tracer = build_tracer(t.flaky.name, t.flaky, app=c.app, hostname="celery@fixtures",
                          eager=False)
    info = tracer(req.id, req.args, req.kwargs, req.request_dict)
    if getattr(info, "state", None) not in (None, "RETRY"):
        raise AssertionError(f"retry trace ended in {info}")
    c.capture("retry_from_task",
              "the retry published by Task.retry(countdown=30) while Celery's tracer runs "
              "tasks.flaky for the retry_original message",
              call_of([5], {"attempt_note": "first"}), orig.id,
              note="same id, retries+1, new eta (now+30s), same origin/root_id/timelimit; "
                   "parent_id becomes the task's own id (the retrying task is the current "
                   "worker task when the retry is sent)")


def capture_rpc_reply_to(c: Capture):
    """With the rpc:// result backend, reply_to is the client's reply queue."""
    rapp = make_app(c.queue, result_backend="rpc://")
    rt = Tasks(rapp)
    reply_queue = None
    try:
        r = rt.add.delay(2, 3)
        reply_queue = rapp.backend.oid
        fx = c.capture("rpc_backend_reply_to",
                       "add.delay(2, 3) from an app with result_backend='rpc://'",
                       call_of([2, 3]), r.id,
                       note="properties.reply_to is the rpc backend's reply queue, which is "
                            "the app's thread oid (a uuid, replaced by {reply_queue} here); "
                            "Celery sends that same oid as reply_to with no backend too")
        if fx["properties"]["reply_to"] == reply_queue:
            fx["properties"]["reply_to"] = "{reply_queue}"
            if fx["headers"].get("reply_to") == reply_queue:
                fx["headers"]["reply_to"] = "{reply_queue}"
            (c.out_dir / "rpc_backend_reply_to.json").write_text(dump_json(fx),
                                                                  encoding="utf-8")
    finally:
        rapp.close()
        if reply_queue:
            delete_queue(reply_queue)


# --------------------------------------------------------------------------------------
# Queue declarations.

def rabbitmqctl_json(*args, vhost="/"):
    exe = shutil.which("rabbitmqctl")
    if not exe:
        raise RuntimeError("rabbitmqctl not found")
    cmd = [exe, "-q", "-p", vhost, *args, "--formatter", "json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def delete_queue(name: str):
    try:
        conn = pika_connection()
        try:
            conn.channel().queue_delete(name)
        finally:
            conn.close()
    except Exception as exc:  # pragma: no cover - best effort cleanup
        print(f"warning: could not delete queue {name}: {exc}", file=sys.stderr)


def delete_exchange(name: str):
    if not name:
        return
    try:
        conn = pika_connection()
        try:
            conn.channel().exchange_delete(name)
        finally:
            conn.close()
    except Exception as exc:  # pragma: no cover
        print(f"warning: could not delete exchange {name}: {exc}", file=sys.stderr)


def normalize_args(arguments):
    """rabbitmqctl's JSON formatter prints arguments as [[name, amqp_type, value], ...]."""
    values, types = {}, {}
    if isinstance(arguments, dict):
        return dict(arguments), {}
    for item in arguments or []:
        if isinstance(item, list) and len(item) == 3:
            values[item[0]] = item[2]
            types[item[0]] = item[1]
        elif isinstance(item, list) and len(item) == 2:
            values[item[0]] = item[1]
    return values, types


def rabbitmqctl_plain_row(qname: str, vhost: str) -> str:
    out = subprocess.run(
        [shutil.which("rabbitmqctl"), "-q", "list_queues", "-p", vhost, "name", "durable",
         "auto_delete", "exclusive", "arguments"],
        check=True, capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.split("\t", 1)[0] == qname:
            return line.replace(qname, "{queue}")
    return ""


def capture_queue_declarations(out_dir: Path, use_rabbitmqctl: bool = True):
    import celery

    vhost = broker_parts()["vhost"]
    variants = [
        ("default", "default settings", {}),
        ("quorum", "task_default_queue_type='quorum'", {"task_default_queue_type": "quorum"}),
        ("max_priority", "task_queue_max_priority=10", {"task_queue_max_priority": 10}),
    ]
    results = {}
    for key, desc, conf in variants:
        qname = f"fixtures-decl-{key}-{_uuid.uuid4()}"
        app = make_app(qname, **conf)
        Tasks(app)
        try:
            kq = app.amqp.queues[qname]
            # Publishing makes Celery declare the queue (and its exchange and binding) itself.
            app.send_task("tasks.add", args=[1, 2])
            entry = {
                "setting": desc,
                "celery_conf": conf,
                "kombu_queue": {
                    "durable": kq.durable,
                    "exclusive": kq.exclusive,
                    "auto_delete": kq.auto_delete,
                    "queue_arguments": kq.queue_arguments,
                    "exchange": {"name": "{queue}" if kq.exchange.name == qname
                                 else kq.exchange.name,
                                 "type": kq.exchange.type,
                                 "durable": kq.exchange.durable,
                                 "auto_delete": kq.exchange.auto_delete},
                    "routing_key": "{queue}" if kq.routing_key == qname else kq.routing_key,
                },
            }
            if use_rabbitmqctl:
                rows = [q for q in rabbitmqctl_json(
                    "list_queues", "name", "durable", "auto_delete", "exclusive", "arguments",
                    vhost=vhost) if q["name"] == qname]
                if len(rows) != 1:
                    raise AssertionError(f"queue {qname} not found by rabbitmqctl: {rows}")
                row = rows[0]
                args, arg_types = normalize_args(row["arguments"])
                entry["rabbitmqctl_list_queues"] = {
                    "name": "{queue}",
                    "durable": row["durable"],
                    "auto_delete": row["auto_delete"],
                    "exclusive": row["exclusive"],
                    "arguments": args,
                    "argument_types": arg_types,
                    "plain_output_row": rabbitmqctl_plain_row(qname, vhost),
                }
                exs = [e for e in rabbitmqctl_json(
                    "list_exchanges", "name", "type", "durable", "auto_delete", "internal",
                    "arguments", vhost=vhost) if e["name"] == kq.exchange.name]
                entry["rabbitmqctl_list_exchanges"] = [
                    dict(e, name="{queue}", arguments=normalize_args(e["arguments"])[0])
                    for e in exs]
                binds = [b for b in rabbitmqctl_json(
                    "list_bindings", "source_name", "destination_name", "destination_kind",
                    "routing_key", "arguments", vhost=vhost)
                    if b["destination_name"] == qname]
                entry["rabbitmqctl_list_bindings"] = [
                    {k: ("{queue}" if v == qname else v) for k, v in b.items()} for b in binds]
            results[key] = entry
        finally:
            app.close()
            delete_queue(qname)
            delete_exchange(qname)
    doc = {
        "case": "queue_declare",
        "description": "How Celery declares its default queue, as RabbitMQ reports it after "
                       "Celery declared uniquely named queues (task_default_queue="
                       "fixtures-decl-<variant>-<uuid>, shown as {queue}) by publishing one "
                       "task; obtained with `rabbitmqctl list_queues -p / name durable "
                       "auto_delete exclusive arguments` (and list_exchanges/list_bindings).",
        "celery_version": celery.__version__,
        "variants": results,
    }
    (out_dir / "queue_declare.json").write_text(dump_json(doc), encoding="utf-8")
    return doc


# --------------------------------------------------------------------------------------
# Replay: publish captured fixtures again, verbatim.

def replay_fixtures(queue: str, cases: list[str], fixture_dir: Path = FIXTURE_DIR,
                    declare: bool = False) -> int:
    """Publish fixture messages into QUEUE (default exchange, routing key QUEUE).

    Body bytes, properties and headers are sent as captured, through kombu/py-amqp (the
    client Celery itself uses, so header values get the same AMQP types). Placeholders
    ({reply_queue}) are sent as they are. With declare=True the queue is declared the
    way Celery declares its default queue (durable, no arguments) first.
    """
    from kombu import Connection, Producer, Queue

    n = 0
    with Connection(broker_url(), connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        if declare:
            Queue(queue, durable=True, channel=channel).queue_declare()
        producer = Producer(channel, routing_key=queue)  # default exchange ""
        for case in cases:
            fx = json.loads((fixture_dir / f"{case}.json").read_text(encoding="utf-8"))
            p = fx["properties"]
            extra = {k: p[k] for k in ("correlation_id", "reply_to", "message_id", "type",
                                       "app_id")
                     if p.get(k) is not None}
            if p.get("expiration") is not None:  # kombu takes seconds, sends ms
                extra["expiration"] = int(p["expiration"]) / 1000.0
            producer.publish(
                fx["body"].encode("utf-8"),
                routing_key=queue,
                content_type=p["content_type"],
                content_encoding=p["content_encoding"],
                headers=fx["headers"],
                delivery_mode=p["delivery_mode"],
                priority=p["priority"],
                retry=False,
                **extra,
            )
            n += 1
    return n


# --------------------------------------------------------------------------------------

def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(FIXTURE_DIR), help="fixture directory")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for each message")
    ap.add_argument("--no-rabbitmqctl", action="store_true",
                    help="skip the rabbitmqctl part of queue_declare.json")
    ap.add_argument("--replay-into", metavar="QUEUE",
                    help="instead of capturing, publish the named fixture cases (default: "
                         "all) verbatim into QUEUE, which must exist unless --declare")
    ap.add_argument("--declare", action="store_true",
                    help="with --replay-into: declare QUEUE as Celery would (durable)")
    ap.add_argument("cases", nargs="*", help="with --replay-into: fixture case names")
    opts = ap.parse_args(argv)

    if opts.replay_into:
        fixture_dir = Path(opts.out)
        cases = opts.cases or sorted(
            f.stem for f in fixture_dir.glob("*.json") if f.stem != "queue_declare")
        n = replay_fixtures(opts.replay_into, cases, fixture_dir, declare=opts.declare)
        print(f"published {n} fixture messages into {opts.replay_into}")
        return

    install_pika_raw_properties_hook()
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.json"):
        old.unlink()

    queue = f"fixtures-{_uuid.uuid4()}"
    app = make_app(queue)
    cap = None
    try:
        cap = Capture(app, queue, out_dir, timeout=opts.timeout)
        run_cases(cap)
    finally:
        if cap is not None:
            cap.close()
        app.close()
        delete_queue(queue)
        delete_exchange(queue)  # Celery declares an exchange named after the default queue
    capture_queue_declarations(out_dir, use_rabbitmqctl=not opts.no_rabbitmqctl)
    for case, desc in cap.written:
        print(f"{case}: {desc}")
    print(f"wrote {len(cap.written)} message fixtures + queue_declare.json to {out_dir}")


if __name__ == "__main__":
    main()
