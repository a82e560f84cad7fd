"""Python Celery 5 on the same broker, for comparison with `celeriac-bench`.

Run through scripts/celery-bench.sh (which makes the virtualenv). The driver
starts a Celery worker with its fastest settings (`--without-gossip
--without-mingle --without-heartbeat`, no remote control, no events, rate
limits off, raised prefetch, log level warning), publishes N no-op tasks to a
throw-away queue as fast as one Python process can (see _publisher), and
measures:

- publish rate: N / (first publish -> last publish returned);
- end to end: N / (first publish -> the worker has finished the N-th task,
  its result stored when results are on). Each child process counts finished
  tasks in a counter shared by the pool (`task_postrun` fires after the result
  is stored); the one that reaches the target writes the time to a file.
- worker RSS (sum over the worker and its pool processes) and CPU seconds
  per 1,000 tasks (same sum, utime + stime).

Celery acknowledges a message before running it (its default, and its fast
setting); celeriac acknowledges after the outcome is stored.

This file is also the Celery app module the worker imports (`-A celery_bench`).
"""

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid

from celery import Celery
from celery.signals import task_postrun, worker_ready

BROKER = os.environ.get("CELERY_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
BACKEND = os.environ.get("CELERY_BENCH_BACKEND") or None
QUEUE = os.environ.get("CELERY_BENCH_QUEUE", "celery-bench")
MARKS = [int(m) for m in os.environ.get("CELERY_BENCH_MARKS", "").split(",") if m]
STATE_DIR = os.environ.get("CELERY_BENCH_DIR", "/tmp")

app = Celery("celery_bench", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_default_queue=QUEUE,
    task_ignore_result=BACKEND is None,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_disable_rate_limits=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_extended=False,
    database_create_tables_at_setup=True,
)

# Shared by the pool's processes (created before prefork forks them) and by
# the threads of a threads pool.
_done = multiprocessing.Value("q", 0)


@app.task(name="bench.noop")
def noop(*args, **kwargs):
    return None


@task_postrun.connect
def _count(**_kwargs):
    with _done.get_lock():
        _done.value += 1
        n = _done.value
    if n in MARKS:
        with open(os.path.join(STATE_DIR, f"mark-{n}"), "w") as f:
            f.write(repr(time.time()))


@worker_ready.connect
def _ready(**_kwargs):
    with open(os.path.join(STATE_DIR, "ready"), "w") as f:
        f.write("1")


# ---------------------------------------------------------------- driver ---


def _tree(pid):
    """pid and its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _cpu_s(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tck


def _rss_mb(pids, key="VmRSS:"):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _wait_file(path, deadline, proc):
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}")
        if time.time() > deadline:
            raise TimeoutError(f"{os.path.basename(path)} not reached in time")
        time.sleep(0.002)
    time.sleep(0.001)
    with open(path) as f:
        text = f.read().strip()
    return float(text) if text else 0.0


def _pg_admin(url, sql):
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _publisher(opts, queue):
    """A function publishing n no-op tasks to queue, from this process.

    "send_task": Celery's own client (app.send_task), about 1,000 tasks/s
    in one Python process, which would make the producer the bottleneck.
    "raw" (default): the protocol 2 message Celery's client builds
    (app.amqp.as_task_v2), built once, then published with py-amqp's
    basic_publish under a fresh task id each time (persistent, no publisher
    confirms: Celery's defaults), so that the worker is what is measured.
    """
    app = Celery("celery_bench_publisher", broker=opts.broker)
    app.conf.task_default_queue = queue
    if opts.publisher == "send_task":
        def publish(n):
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    app.send_task("bench.noop", queue=queue, producer=producer)

        return publish
    template = app.amqp.as_task_v2(uuid.uuid4().hex, "bench.noop", args=(), kwargs={})
    body = json.dumps(template.body).encode()
    conn = app.connection_for_write()
    conn.ensure_connection(max_retries=3)
    channel = conn.default_channel

    def publish(n):
        for _ in range(n):
            task_id = str(uuid.uuid4())
            headers = dict(template.headers, id=task_id, root_id=task_id)
            message = channel.prepare_message(
                body, 0, "application/json", "utf-8", headers,
                {"correlation_id": task_id, "delivery_mode": 2},
            )  # fmt: skip
            channel.basic_publish(message, exchange="", routing_key=queue)

    return publish


def run_one(opts, results):
    run_id = uuid.uuid4().hex[:12]
    queue = f"celery-bench-{run_id}"
    state_dir = f"/tmp/celery-bench-{run_id}"
    os.makedirs(state_dir)
    db_name = f"celery_bench_{run_id}"
    backend = ""
    if results == "postgres":
        _pg_admin(opts.postgres_url, f"CREATE DATABASE {db_name}")
        server = opts.postgres_url.split("?")[0].rsplit("/", 1)[0]
        backend = "db+" + server.replace("postgres://", "postgresql://", 1) + "/" + db_name
    warmup, n = opts.warmup, opts.tasks
    env = dict(
        os.environ,
        CELERY_BENCH_BROKER=opts.broker,
        CELERY_BENCH_BACKEND=backend,
        CELERY_BENCH_QUEUE=queue,
        CELERY_BENCH_MARKS=f"{warmup},{warmup + n}",
        CELERY_BENCH_DIR=state_dir,
        PYTHONPATH=os.path.dirname(os.path.abspath(__file__)),
    )
    cmd = [
        sys.executable, "-m", "celery", "-A", "celery_bench", "worker",
        "--pool", opts.pool, "--concurrency", str(opts.concurrency),
        "--prefetch-multiplier", str(opts.prefetch_multiplier),
        "-Q", queue, "-n", f"bench-{run_id}@%h", "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    deadline = time.time() + opts.timeout
    try:
        _wait_file(os.path.join(state_dir, "ready"), deadline, proc)
        time.sleep(0.5)
        idle_rss = _rss_mb(_tree(proc.pid))
        publish = _publisher(opts, queue)
        publish(warmup)
        if warmup:
            _wait_file(os.path.join(state_dir, f"mark-{warmup}"), deadline, proc)
            time.sleep(0.3)
        pids = _tree(proc.pid)
        cpu0 = _cpu_s(pids)
        start = time.time()
        publish(n)
        published = time.time()
        done = _wait_file(os.path.join(state_dir, f"mark-{warmup + n}"), deadline, proc)
        pids = _tree(proc.pid)
        cpu = _cpu_s(pids) - cpu0
        peak = _rss_mb(pids, "VmHWM:")
        return {
            "impl": "celery",
            "celery_version": __import__("celery").__version__,
            "pool": opts.pool,
            "concurrency": opts.concurrency,
            "prefetch_multiplier": opts.prefetch_multiplier,
            "results": results,
            "publisher": opts.publisher,
            "tasks": n,
            "publish_per_s": round(n / (published - start)),
            "e2e_per_s": round(n / (done - start)),
            "e2e_s": round(done - start, 3),
            "worker_idle_rss_mb": round(idle_rss, 1),
            "worker_peak_rss_mb": round(peak, 1),
            "worker_cpu_s_per_1k": round(cpu / n * 1000, 4),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for p in _tree(proc.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            proc.wait()
        try:
            cleanup = Celery("celery_bench_cleanup", broker=opts.broker)
            with cleanup.connection_for_write() as conn:
                ch = conn.default_channel
                ch.queue_delete(queue)
                ch.exchange_delete(queue)
        except Exception as e:  # best effort
            print(f"celery-bench: could not delete queue {queue}: {e}", file=sys.stderr)
        if results == "postgres":
            try:
                _pg_admin(opts.postgres_url, f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            except Exception as e:  # best effort
                print(f"celery-bench: could not drop {db_name}: {e}", file=sys.stderr)
        for f in os.listdir(state_dir):
            os.remove(os.path.join(state_dir, f))
        os.rmdir(state_dir)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--results", default="none,postgres", help="comma-separated: none, postgres")
    p.add_argument("--pool", default="auto", choices=["auto", "prefork", "threads", "solo"],
                   help="auto (the fastest measured here): threads x8 with results off, prefork x2 with PostgreSQL")
    p.add_argument("--concurrency", type=int, help="default: 8 for threads, the number of CPUs for prefork")
    p.add_argument("--prefetch-multiplier", type=int, default=64)
    p.add_argument("--broker", default=os.environ.get("CELERY_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"))
    p.add_argument("--postgres-url", default=os.environ.get("CELERY_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"))
    p.add_argument("--publisher", default="raw", choices=["raw", "send_task"],
                   help="raw: Celery's message, published with py-amqp (default); send_task: Celery's client")
    p.add_argument("--timeout", type=float, default=180, help="seconds per run")
    p.add_argument("--json", action="store_true", help="one JSON object per run")
    opts = p.parse_args()
    for results in [r.strip() for r in opts.results.split(",") if r.strip()]:
        if results not in ("none", "postgres"):
            p.error(f"--results: unknown {results!r}")
        run_opts = argparse.Namespace(**vars(opts))
        if opts.pool == "auto":
            run_opts.pool = "threads" if results == "none" else "prefork"
        if opts.concurrency is None:
            run_opts.concurrency = 8 if run_opts.pool == "threads" else (os.cpu_count() or 2)
        r = run_one(run_opts, results)
        if opts.json:
            print(json.dumps(r), flush=True)
        else:
            print(
                f"celery {r['celery_version']} ({r['pool']} x{r['concurrency']}, prefetch x{r['prefetch_multiplier']}), "
                f"results {results}: {r['tasks']} no-op tasks, publish {r['publish_per_s']}/s, "
                f"end to end {r['e2e_per_s']} tasks/s ({r['e2e_s']} s), worker RSS {r['worker_idle_rss_mb']}/"
                f"{r['worker_peak_rss_mb']} MB idle/peak, CPU {r['worker_cpu_s_per_1k']} s per 1,000 tasks",
                flush=True,
            )


if __name__ == "__main__":
    main()
