"""The driver relay alone: cost per metric from 1 to 1,024 concurrent connections (issue M item 7).

What it measures: the relay (``forwarding.driver.relay``) and the sink behind it
(``forwarding.driver.sink``) on a null store, in this process, taking ``total`` points in
"points" frames of ``frame`` points each, spread evenly over ``connections`` connections that
all send at once. The handler between them does what the driver's does with a points request
(the decode check of ``forwarding.driver.decode``, a ``Submission`` to the sink).

What it leaves out: the clients. They run in separate processes (``--client-processes``, 2 by
default, each holding its share of the connections on one selector), as Spark tasks do on other
machines; every frame is built and encoded before the clock starts, with the task side's own
code (``forwarding.task.frames.frame``, ``protocol.encode``), and each connection was opened
and authenticated (``forwarding.task.transport.Connection``) before it. A client sends a
connection's next frame once the previous one is acknowledged (one request at a time per
connection, as the shipper does), so every point counted was acknowledged by the relay.

Two figures per run, for the relay process only: wall time per metric from the first frame sent
to the last point in the (null) store, and the CPU time the relay process used over that time
per metric (its relay, pool and sink threads; the clients' CPU is theirs). On two shared cores
the clients' processes take a core from the relay while they run, so the wall figure is an
upper bound; the CPU figure is the relay's own cost.

``--before REV`` measures the relay path (``MODULES``) of git revision REV too, in the same run, each
connection count alternating before/after (``MODULES`` of REV are loaded from ``git show``).

    .venv/bin/python benchmarks/relay.py [--before REV] [--connections 1,4,16,64,256,1024]
    .venv/bin/python benchmarks/run.py --relay-only [--relay-before REV]   # also rewrites its section
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTION = "relay"
CONNECTIONS = (1, 4, 16, 64, 256, 1024)
SECRET = "benchmark-secret"
_DRIVER = "spark_tracking.forwarding.driver"


# -- the clients (a separate process) --------------------------------------------------------


def _frames(first: int, count: int, per_conn: int, frame: int) -> list:
    """Encoded frames of connections ``first`` .. ``first + count - 1``: one list per connection,
    built by the task side's framing (one binding per connection: its worker is its number)."""
    from spark_tracking.forwarding import protocol
    from spark_tracking.forwarding.task.binding import Binding
    from spark_tracking.forwarding.task.frames import frame as build
    from spark_tracking.forwarding.task.frames import new_point

    out = []
    now = int(time.time() * 1000)
    for c in range(first, first + count):
        b = Binding("127.0.0.1:0", SECRET, "0:0", (0, c, 0, c, None, 0), from_task=True)
        frames = []
        for seq, start in enumerate(range(0, per_conn, frame), 1):
            points = [
                new_point((b, "loss", 0.5 + step * 1e-6, now + step, step))
                for step in range(start, min(per_conn, start + frame))
            ]
            message = build(b, points).message
            message["seq"] = seq
            frames.append((seq, len(points), protocol.encode(message)))
        out.append(frames)
    return out


def client_main(address: str, first: int, count: int, per_conn: int, frame: int) -> int:
    """A client process: open and authenticate ``count`` connections, encode their frames, say
    "ready", wait for "go" on stdin, send every frame (one in flight per connection), print the
    points acknowledged."""
    from spark_tracking.forwarding import protocol
    from spark_tracking.forwarding.task.transport import Connection

    frames = _frames(first, count, per_conn, frame)
    socks = []
    for _ in range(count):
        conn = Connection(address, SECRET, timeout=300)
        conn._connect()
        assert conn.sock is not None
        socks.append(conn.sock)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    sel = selectors.DefaultSelector()
    state = {}
    for sock, todo in zip(socks, frames):
        sock.setblocking(True)
        sock.sendall(todo[0][2])
        sock.setblocking(False)
        state[sock] = [todo, 0, b""]  # frames, index of the frame in flight, bytes of its reply
        sel.register(sock, selectors.EVENT_READ)
    acked = 0
    while state:
        for key, _ in sel.select():
            sock = key.fileobj
            todo, i, buf = state[sock]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionError("the relay closed a connection")
            buf += chunk
            if len(buf) < 4 or len(buf) < 4 + protocol.HEADER.unpack(buf[:4])[0]:
                state[sock][2] = buf
                continue
            reply = protocol.decode_body(buf[4:])
            seq, n, _ = todo[i]
            if reply.get("ack") != seq or "error" in reply:
                raise RuntimeError(f"unexpected reply {reply!r} to frame {seq}")
            acked += n
            if i + 1 == len(todo):
                sel.unregister(sock)
                sock.close()
                del state[sock]
                continue
            state[sock] = [todo, i + 1, b""]
            sock.setblocking(True)
            sock.sendall(todo[i + 1][2])
            sock.setblocking(False)
    print(acked, flush=True)
    return 0


# -- the relay under test (this process) ----------------------------------------------------


#: the driver modules the relay's path runs through that the "before" column takes from its revision
MODULES = ("decode", "batches", "aggregation", "relay", "sink")


def load_revision(rev: str) -> dict[str, types.ModuleType]:
    """``MODULES`` of git revision ``rev``, loaded beside today's package, by name; the names a
    later one imported from an earlier one (the sink's ``cut_requests``, ``Aggregator``) are
    those of ``rev`` too; other neighbours are today's."""
    import importlib

    loaded: dict = {}
    tmp = tempfile.mkdtemp(prefix="relay-before-")
    for name in MODULES:
        source = subprocess.run(
            ["git", "show", f"{rev}:spark_tracking/forwarding/driver/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        path = os.path.join(tmp, f"{name}.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(source)
        spec = importlib.util.spec_from_file_location(f"{_DRIVER}._before_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        module.__package__ = _DRIVER
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for earlier, old in loaded.items():
            today = importlib.import_module(f"{_DRIVER}.{earlier}")
            for attr, value in vars(today).items():
                if module.__dict__.get(attr) is value and hasattr(old, attr):
                    setattr(module, attr, getattr(old, attr))
        loaded[name] = module
    return loaded


def current() -> dict[str, types.ModuleType]:
    """Today's ``MODULES``, by name."""
    import importlib

    return {name: importlib.import_module(f"{_DRIVER}.{name}") for name in MODULES}


class _NullClient:
    def __init__(self):
        self.stored = 0

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=True):
        self.stored += len(metrics)


class _Handler:
    """What the driver's handler does with points (the decode check, a Submission), one run."""

    def __init__(self, sink, submission, clean):
        self.sink, self.submission, self.clean = sink, submission, clean

    def points(self, binding, worker, message):
        metrics, bad = self.clean(message.get("m", []))
        assert not bad
        return "run", self.sink.submit(self.submission("points", "run", worker, metrics))

    def resolve(self, binding, worker):
        return "run"

    def done(self, binding, worker):
        return None


def measure(modules, connections: int, total: int, frame: int = 500, processes: int = 2) -> dict:
    """One measure: {"us": wall µs per metric, "cpu_us": relay process CPU µs per metric,
    "sent": points acknowledged, "stored": points in the null store}."""
    relay_mod, sink_mod = modules["relay"], modules["sink"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * connections + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * connections + 256), hard))
    store = _NullClient()
    sink = sink_mod.Sink(store, "null://", sink_mod.Spool(tempfile.mkdtemp(), 1 << 30), lambda stage: 1, linger=0.0)
    relay = relay_mod.Relay(
        SECRET,
        # the decode check, by its name in the revision measured (_clean_metrics before M's split)
        _Handler(
            sink,
            sink_mod.Submission,
            getattr(modules["decode"], "clean_metrics", None) or modules["decode"]._clean_metrics,
        ),
        "127.0.0.1",
        0,
        max_connections=2 * connections,
    ).start()
    per_conn = total // connections
    procs = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    first = 0
    try:
        for share in (s for s in shares if s):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        relay.address,
                        str(first),
                        str(share),
                        str(per_conn),
                        str(frame),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
            first += share
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready", "a client did not connect"
        cpu, t = time.process_time(), time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        sent = sum(int(p.stdout.readline()) for p in procs if p.stdout is not None)
        assert sink.flush(120), "the sink did not deliver everything"
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        for p in procs:
            p.wait(60)
        relay.stop()
        sink.stop()
    return {"us": elapsed / sent * 1e6, "cpu_us": cpu / sent * 1e6, "sent": sent, "stored": store.stored}


def report(rows: list, total: int, frame: int, processes: int, before: str | None, loads: tuple, rounds: int) -> str:
    """The Markdown section of results.md: rows of (connections, before or None, after)."""
    most = max(c for c, _, _ in rows)
    one_frame = (
        f" (from {total // frame:,} connections on, one frame per connection: {total // most:,} points at {most:,})"
        if most > total // frame
        else ""
    )
    head = (
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; load average (1 min) "
        f"{loads[0]:.1f} before, {loads[1]:.1f} after. Relay + sink in one process on a null store, the driver's "
        f"decode check included; {total:,} points per measure in frames of {frame}{one_frame}, from {processes} client "
        "processes holding the connections, frames encoded before the clock starts (`benchmarks/relay.py`). Wall: "
        "µs per metric from the first frame sent to the last point stored. CPU: the relay process's CPU time per "
        f"metric (its relay, pool and sink threads), the clients' left out. Medians of {rounds} measures per "
        "connection count. Sent: points the relay acknowledged, stored: points the (null) store took, over all "
        "measures of that count."
    )
    lines = ["## Relay alone (benchmarks/relay.py)", "", head, ""]
    if before:
        lines += [
            f"Before: {', '.join(m + '.py' for m in MODULES)} of the driver at {before}; after: this tree; the "
            "two alternate (ABBA) in the same run.",
            "",
            "| concurrent connections | before: wall µs/metric | before: CPU µs/metric | before: sent / stored | "
            "after: wall µs/metric | after: CPU µs/metric | after: sent / stored |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c, old, new in rows:
            lines.append(
                f"| {c} | {old['us']:.2f} | {old['cpu_us']:.2f} | {old['sent']:,} / {old['stored']:,} | "
                f"{new['us']:.2f} | {new['cpu_us']:.2f} | {new['sent']:,} / {new['stored']:,} |"
            )
    else:
        lines += [
            "| concurrent connections | wall µs/metric | CPU µs/metric | sent | stored |",
            "|---:|---:|---:|---:|---:|",
        ]
        for c, _, new in rows:
            lines.append(f"| {c} | {new['us']:.2f} | {new['cpu_us']:.2f} | {new['sent']:,} | {new['stored']:,} |")
    return "\n".join(lines)


def run(
    connections=CONNECTIONS, total: int = 256_000, frame: int = 500, processes: int = 2, before=None, rounds: int = 3
) -> str:
    """Measure every connection count ``rounds`` times (before and after alternating, in ABBA order
    over the counts, when ``before`` names a revision); the report section, with medians."""
    import statistics

    loads = [os.getloadavg()[0]]
    sets = {"new": current()}
    if before:
        sets["old"] = load_revision(before)
    for modules in sets.values():  # warm up: imports (MLflow's entities), first connections
        measure(modules, 4, 20_000, frame, processes)
    samples: dict = {(c, which): [] for c in connections for which in sets}
    n = 0
    for _ in range(rounds):
        for c in connections:
            order = sorted(sets, reverse=n % 2 == 1)
            n += 1
            for which in order:
                result = measure(sets[which], c, total, frame, processes)
                samples[(c, which)].append(result)
                print(c, which, {k: round(v, 2) for k, v in result.items()}, file=sys.stderr, flush=True)
    loads.append(os.getloadavg()[0])

    def summary(results: list) -> dict:
        return {
            "us": statistics.median(r["us"] for r in results),
            "cpu_us": statistics.median(r["cpu_us"] for r in results),
            "sent": sum(r["sent"] for r in results),
            "stored": sum(r["stored"] for r in results),
        }

    rows = [(c, summary(samples[(c, "old")]) if before else None, summary(samples[(c, "new")])) for c in connections]
    return report(rows, total, frame, processes, before, tuple(loads), rounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision whose relay path (MODULES) to measure alongside")
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)))
    parser.add_argument("--total", type=int, default=256_000, help="points per measure")
    parser.add_argument("--frame", type=int, default=500, help="points per frame")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="measures per connection count (medians)")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    print(run(connections, args.total, args.frame, args.client_processes, args.before, args.rounds))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        address, first, count, per_conn, frame = sys.argv[2:7]
        sys.exit(client_main(address, int(first), int(count), int(per_conn), int(frame)))
    sys.exit(main())
