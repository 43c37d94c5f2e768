"""Pipeline benchmark: submit latency, tasks/s, TTFT overhead, Redis commands per task, imports.

Everything runs on 127.0.0.1. Phases 1-3 run the full local stack as separate processes
(app = producer + worker via `lib.app.asgi`, local QStash server, offline model, two Valkeys:
one for the app, one for the QStash server's own state) and drive it from this process
over HTTP. Phase 4 counts Redis commands in process, one part at a time. Phase 5 times
cold imports in fresh interpreters. Figures are printed; this is not a test.

    .venv/bin/python bench/pipeline.py [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, whatever the venv points at

from lib.auth import issue_token  # noqa: E402
from lib.local.embedded import EmbeddedValkey, free_port  # noqa: E402
from lib.redis.port import Arg, KeyedEntry, RedisPort, StreamEntry, pairs_to_dict  # noqa: E402
from lib.redis.tcp import TcpRedis  # noqa: E402
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_QSTASH_TOKEN  # noqa: E402

PY = sys.executable
HOST = "127.0.0.1"
SECRET = "bench-secret-" + "0123456789abcdef" * 2
TERMINAL = ("done", "error", "cancelled")
MODEL_TTFT_MS = 200.0
# The offline job_match answer is ~345 tokens: at this pace it streams for ~1 s.
STREAM_TOKENS_PER_S = 350.0

BODY: dict[str, Any] = {
    "template": "job_match",
    "variables": {
        "resume_text": "Python developer, 6 years: asyncio, Redis, PostgreSQL, Docker, AWS Lambda.",
        "job_text": "Senior backend engineer: Python, Redis, Kubernetes, PostgreSQL, on call.",
    },
    "lang": "en",
}
BODY_BYTES = json.dumps(BODY).encode()

# Generous limits: the bench measures the pipeline, not the admission policy.
LIMITS = {
    "DEEPSEEK_MAX_WORKERS": "256",
    "GLM_MAX_WORKERS": "256",
    "GLM_FLASH_MAX_WORKERS": "256",
    "GLM_VISION_MAX_WORKERS": "256",
    "QUEUE_MAX_PENDING": "100000",
    "RATE_USER_LIMIT": "100000",
    "RATE_TRIAL_LIMIT": "100000",
}
# Anything that would switch a part away from the local stack.
SCRUBBED = (
    "REDIS_URL",
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "QSTASH_URL",
    "QSTASH_TOKEN",
    "DATABASE_URL",
    "DEEPSEEK_API_KEY",
    "ZHIPUAI_API_KEY",
    "OPENAI_COMPAT_BASE_URL",
    "OPENAI_COMPAT_API_KEY",
)


# --------------------------------------------------------------------------- figures


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Row:
    """One line of the result table."""

    metric: str
    value: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    """Figures by section, printed as one table at the end."""

    sections: dict[str, list[Row]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self, section: str, metric: str, value: str, target: str = "", ok: bool | None = None
    ) -> None:
        self.sections.setdefault(section, []).append(Row(metric, value, target, ok))

    def missed(self) -> list[str]:
        return [r.metric for rows in self.sections.values() for r in rows if r.ok is False]

    def render(self) -> str:
        width = max(len(r.metric) for rows in self.sections.values() for r in rows)
        vwidth = max(len(r.value) for rows in self.sections.values() for r in rows)
        lines: list[str] = []
        for section, rows in self.sections.items():
            lines.append(f"\n[{section}]")
            for r in rows:
                mark = "" if r.ok is None else ("PASS" if r.ok else "MISS")
                target = f"target {r.target}" if r.target else ""
                lines.append(f"  {r.metric:<{width}}  {r.value:>{vwidth}}  {target:<22} {mark}")
        if self.notes:
            lines.append("\nnotes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- local stack


@dataclass
class Stack:
    """The local stack as separate processes on loopback."""

    app_url: str  # the producer
    redis_url: str  # the app's Valkey
    tmp: tempfile.TemporaryDirectory[str]
    valkeys: list[EmbeddedValkey]
    procs: list[tuple[str, subprocess.Popen[bytes]]]

    @property
    def app_port(self) -> int:
        """The producer's port on `HOST`."""
        return int(self.app_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for valkey in self.valkeys:
            valkey.stop()
        self.tmp.cleanup()


def _wait_http(name: str, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer on {url}")


def _uvicorn(factory: str, port: int) -> list[str]:
    return [
        *(PY, "-m", "uvicorn", factory, "--factory", "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--no-access-log"),
    ]


def start_stack(*, ttft_ms: float, tokens_per_s: float = 0.0) -> Stack:
    """Start Valkey x2, the offline model, the local QStash server, the worker and the producer.

    Producer and worker run as separate processes, as the serverless deployments run them
    (separate function instances); QStash keeps its state in its own Valkey so the app's
    Valkey sees only the app's commands.
    """
    tmp = tempfile.TemporaryDirectory(prefix="slotline-bench-")
    valkeys = [EmbeddedValkey(), EmbeddedValkey()]
    stack = Stack("", "", tmp, valkeys, [])
    try:
        app_redis, qstash_redis = valkeys[0].start(), valkeys[1].start()
        stack.redis_url = app_redis
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        port = {name: free_port() for name in ("model", "qstash", "worker", "producer")}
        url = {name: f"http://{HOST}:{p}" for name, p in port.items()}
        app_env = (
            env
            | LIMITS
            | {
                "REDIS_URL": app_redis,
                "QSTASH_URL": url["qstash"],
                "QSTASH_TOKEN": DEV_QSTASH_TOKEN,
                "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
                "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
                # QStash delivers to (and signs) the worker's URL.
                "APP_BASE_URL": url["worker"],
                "APP_SECRET": SECRET,
                "OFFLINE_MODEL_URL": f"{url['model']}/v1",
                "STATE_DIR": str(Path(tmp.name) / "state"),
            }
        )
        model_argv = [
            *(PY, "-m", "lib.local.offline.model", "--host", HOST, "--port", str(port["model"])),
            *("--ttft-ms", str(ttft_ms), "--tokens-per-s", str(tokens_per_s)),
        ]
        qstash_argv = [
            *(PY, "-m", "lib.local.qstash", "--host", HOST, "--port", str(port["qstash"])),
            *("--redis-url", qstash_redis, "--time-scale", "0.01"),
        ]
        commands = [
            ("model", model_argv, env, f"{url['model']}/v1/models"),
            ("qstash", qstash_argv, env | {"QSTASH_TOKEN": DEV_QSTASH_TOKEN}, url["qstash"]),
            (
                "worker",
                _uvicorn("worker.app:create_app", port["worker"]),
                app_env,
                f"{url['worker']}/api/worker/healthz",
            ),
            (
                "producer",
                _uvicorn("producer.app:create_app", port["producer"]),
                app_env,
                f"{url['producer']}/healthz",
            ),
        ]
        for name, argv, proc_env, probe in commands:
            log = Path(tmp.name) / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, cwd=ROOT, env=proc_env, stdout=out, stderr=out)
            stack.procs.append((name, proc))
            _wait_http(name, probe, proc, log)
    except BaseException:
        stack.stop()
        raise
    stack.app_url = url["producer"]
    return stack


# --------------------------------------------------------------------------- clients


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client: little client CPU in the measured latency."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None or self._reader.at_eof():
            # New, or closed by the server while idle (uvicorn's keep-alive timeout).
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)

    async def events(self, path: str, token: str) -> AsyncIterator[tuple[str, str]]:
        """Follow an SSE stream on a connection of its own: (event, id) as each arrives."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                (
                    f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            if not head.startswith("http/1.1 200") or "transfer-encoding: chunked" not in head:
                raise RuntimeError(f"unexpected SSE response: {head.splitlines()[0]}")
            pending = ""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                pending += (await reader.readexactly(size + 2))[:-2].decode()
                pending = pending.replace("\r\n", "\n")
                while "\n\n" in pending:
                    block, pending = pending.split("\n\n", 1)
                    fields = dict(
                        (line.partition(":")[0], line.partition(":")[2].strip())
                        for line in block.split("\n")
                    )
                    if "event" in fields:
                        yield fields["event"], fields.get("id", "")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


def tokens(prefix: str, n: int) -> list[str]:
    """One bearer token per task: distinct users, so no per-user lock or rate window binds."""
    return [issue_token(SECRET, f"{prefix}-{i}", 3600) for i in range(n)]


@dataclass
class Submitted:
    """What the submit phase saw."""

    latencies: list[float]
    task_ids: list[str]
    errors: Counter[int]
    started: float
    wall: float


async def submit_many(
    port: int, toks: Sequence[str], clients: int, *, every_s: float = 0.0
) -> Submitted:
    """Submit one task per token from `clients` concurrent keep-alive connections.

    With `every_s` each client submits once per `every_s` seconds (an open, paced load,
    client phases spread evenly); without it each submits again as soon as answered.
    """
    queue: asyncio.Queue[str] = asyncio.Queue()
    for tok in toks:
        queue.put_nowait(tok)
    latencies: list[float] = []
    task_ids: list[str] = []
    errors: Counter[int] = Counter()
    begin = time.perf_counter()

    async def client(index: int) -> None:
        conn = RawHttp(HOST, port)
        due = begin + every_s * index / clients
        try:
            while not queue.empty():
                if every_s:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += every_s
                try:
                    tok = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                t0 = time.perf_counter()
                status, body = await conn.post("/api/tasks", BODY_BYTES, tok)
                latencies.append(time.perf_counter() - t0)
                if status == 202:
                    task_ids.append(json.loads(body)["task_id"])
                else:
                    errors[status] += 1
        finally:
            await conn.close()

    started = time.time()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return Submitted(latencies, task_ids, errors, started, time.perf_counter() - begin)


async def wait_finished(
    redis: RedisPort, task_ids: Sequence[str], *, stall_s: float = 5.0
) -> dict[str, tuple[str, int, int]]:
    """Poll task hashes until every task is terminal or none finished for `stall_s` seconds.

    Returns:
        id -> (status, created_ms, finished_ms) for the tasks that finished.
    """
    left = list(task_ids)
    done: dict[str, tuple[str, int, int]] = {}
    progress = time.monotonic()
    while left and time.monotonic() - progress < stall_s:
        replies = await redis.pipeline(
            [["HMGET", f"task:{t}", "status", "created_ms", "finished_ms"] for t in left]
        )
        still: list[str] = []
        for task_id, (status, created, finished) in zip(left, replies, strict=True):
            if status in ("done", "failed", "cancelled") and finished:
                done[task_id] = (status, int(created), int(finished))
            else:
                still.append(task_id)
        if len(still) < len(left):
            progress = time.monotonic()
        left = still
        if left:
            await asyncio.sleep(0.02)
    return done


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- phases 1-2


async def phase_submit_and_throughput(report: Report, *, quick: bool) -> None:
    """Submit latency at 50 clients (paced and back to back), then tasks/s end to end.

    Lightest load first, and every phase's tasks finish before the next phase starts:
    on 2 cores a backlog of tasks left running would be measured as submit latency.
    """
    clients = 50
    closed_n = 200 if quick else 500
    rounds = 2 if quick else 4
    batch = 100 if quick else 200
    say("phase 1-2: starting the local stack (offline model at zero latency)")
    stack = start_stack(ttft_ms=0.0)
    redis = TcpRedis.from_url(stack.redis_url)
    stuck = 0
    try:
        port = stack.app_port
        run = secrets.token_hex(3)
        # Warm-up: connections, scripts loaded, first-call imports (qstash SDK) done.
        warm = await submit_many(port, tokens(f"w{run}", clients), clients)
        stuck += len(warm.task_ids) - len(await wait_finished(redis, warm.task_ids))
        section = f"1. submit latency ({clients} concurrent clients, real producer over HTTP)"
        errors: Counter[int] = Counter()

        say("phase 1: 1 client, each task done before the next submit")
        solo_lat: list[float] = []
        for tok in tokens(f"o{run}", 30 if quick else 60):
            one = await submit_many(port, [tok], 1)
            solo_lat += one.latencies
            errors += one.errors
            stuck += len(one.task_ids) - len(await wait_finished(redis, one.task_ids))
        report.add(section, "1 client, idle stack: submit p50", ms(pct(solo_lat, 50)))
        report.add(section, "1 client, idle stack: submit p99", ms(pct(solo_lat, 99)))

        for every_s in (4.0, 2.0):
            rate = clients / every_s
            n = clients * rounds
            say(f"phase 1: {n} submits, {clients} clients each every {every_s:g} s ({rate:g}/s)")
            paced = await submit_many(
                port, tokens(f"p{every_s:g}{run}", n), clients, every_s=every_s
            )
            p50 = pct(paced.latencies, 50)
            label = f"{clients} clients, {rate:g}/s offered"
            report.add(section, f"{label}: submit p50", ms(p50), "<= 5 ms", p50 <= 0.005)
            report.add(section, f"{label}: submit p99", ms(pct(paced.latencies, 99)))
            errors += paced.errors
            stuck += len(paced.task_ids) - len(await wait_finished(redis, paced.task_ids))

        say(f"phase 1: {closed_n} submits, {clients} clients back to back (closed loop)")
        sub = await submit_many(port, tokens(f"s{run}", closed_n), clients)
        p50 = pct(sub.latencies, 50)
        rate_max = len(sub.latencies) / sub.wall
        label = f"{clients} clients back to back"
        report.add(section, f"{label}: submit p50", ms(p50), "<= 5 ms", p50 <= 0.005)
        report.add(section, f"{label}: submit p99", ms(pct(sub.latencies, 99)))
        report.add(section, f"{label}: submits/s", f"{rate_max:.0f}")
        report.notes.append(
            f"back to back, {clients} clients wait on a stack that takes {rate_max:.0f} "
            f"submits/s: p50 ~ {clients}/{rate_max:.0f} s = {clients / rate_max * 1000:.0f} ms "
            "(Little's law); a p50 of 5 ms there would take 10,000 submits/s."
        )
        errors += sub.errors
        report.add(section, "non-202 replies", str(sum(errors.values())), "0", not errors)
        stuck += len(sub.task_ids) - len(await wait_finished(redis, sub.task_ids))

        say(f"phase 2: a batch of {batch} tasks end to end")
        cpu0 = {name: cpu_seconds(proc.pid) for name, proc in stack.procs}
        tp = await submit_many(port, tokens(f"t{run}", batch), clients)
        finished = await wait_finished(redis, tp.task_ids)
        cpu1 = {name: cpu_seconds(proc.pid) for name, proc in stack.procs}
        ok = [f for f in finished.values() if f[0] == "done"]
        section = "2. end-to-end throughput (submit -> QStash -> worker -> model -> done)"
        report.add(section, "tasks done", f"{len(ok)}/{batch}", "all", len(ok) == batch)
        if ok:
            last = max(f[2] for f in ok) / 1000
            e2e = [(f[2] - f[1]) / 1000 for f in ok]
            report.add(section, "tasks/s", f"{len(ok) / (last - tp.started):.1f}")
            report.add(section, "submit->done p50", ms(pct(e2e, 50)))
            report.add(section, "submit->done p99", ms(pct(e2e, 99)))
            per_task = ", ".join(
                f"{name} {(cpu1[name] - cpu0[name]) * 1000 / batch:.1f}" for name in cpu0
            )
            report.notes.append(f"phase 2 CPU ms per task by process: {per_task}")
        stuck += batch - len(finished)
        report.add(section, "tasks never finished (phases 1-2)", str(stuck), "0", stuck == 0)
    finally:
        await redis.aclose()
        stack.stop()


# --------------------------------------------------------------------------- phase 3


@dataclass
class Ttft:
    """One task's timeline in wall-clock seconds (stream ids are Valkey's ms clock)."""

    submitted: float
    queued: float
    started: float
    first_token: float
    received: float


def _id_s(stream_id: str) -> float:
    return int(stream_id.split("-", 1)[0]) / 1000


async def one_ttft(client: RawHttp, token: str) -> Ttft:
    """Submit, follow the SSE stream to its end; time the first `token` event at the client."""
    t0 = time.time()
    status, body = await client.post("/api/tasks", BODY_BYTES, token)
    if status != 202:
        raise RuntimeError(f"submit: {status} {body[:200]!r}")
    seen: dict[str, tuple[str, float]] = {}
    async for event, event_id in client.events(json.loads(body)["events_url"], token):
        seen.setdefault(event, (event_id, time.time()))
        # A user reads the answer to its end before asking again: a client that left
        # after the first token would overlap its next task with this one.
        if event in TERMINAL:
            break
    if "token" not in seen:
        raise RuntimeError(f"no token event: {sorted(seen)}")
    return Ttft(
        t0,
        _id_s(seen["queued"][0]),
        _id_s(seen["started"][0]),
        _id_s(seen["token"][0]),
        seen["token"][1],
    )


async def phase_ttft(report: Report, *, quick: bool) -> None:
    """TTFT overhead at the SSE client over the model's own TTFT, at 1 and 4 clients."""
    runs = [(1, 8 if quick else 15), (4, 5 if quick else 8)]
    say(f"phase 3: TTFT, model TTFT {MODEL_TTFT_MS:.0f} ms")
    stack = start_stack(ttft_ms=MODEL_TTFT_MS)
    section = f"3. TTFT overhead at the SSE client (model TTFT {MODEL_TTFT_MS:.0f} ms)"
    model = MODEL_TTFT_MS / 1000
    try:
        # One keep-alive connection per client for its submits, one more per SSE stream.
        conns = [RawHttp(HOST, stack.app_port) for _ in range(max(c for c, _ in runs))]
        try:
            run = secrets.token_hex(3)
            warm = tokens(f"x{run}", len(conns))
            await asyncio.gather(*(one_ttft(c, t) for c, t in zip(conns, warm, strict=True)))
            for clients, per_client in runs:
                toks = tokens(f"y{clients}{run}", clients * per_client)

                async def serial(client: RawHttp, mine: Sequence[str]) -> list[Ttft]:
                    return [await one_ttft(client, t) for t in mine]

                parts = await asyncio.gather(
                    *(serial(conns[i], toks[i::clients]) for i in range(clients))
                )
                got = [t for part in parts for t in part]
                over = [t.received - t.submitted - model for t in got]
                label = f"{clients} client{'s' if clients > 1 else ''} ({len(got)} tasks)"
                p50 = pct(over, 50)
                report.add(section, f"{label}: overhead p50", ms(p50), "<= 15 ms", p50 <= 0.015)
                report.add(section, f"{label}: overhead p99", ms(pct(over, 99)))
                steps = {
                    "submit -> queued (admit)": [t.queued - t.submitted for t in got],
                    "queued -> started (publish+QStash+verify+start)": [
                        t.started - t.queued for t in got
                    ],
                    "started -> 1st token XADD - model TTFT": [
                        t.first_token - t.started - model for t in got
                    ],
                    "1st token XADD -> SSE client": [t.received - t.first_token for t in got],
                }
                for name, values in steps.items():
                    report.add(section, f"  {name} p50", ms(pct(values, 50)))
        finally:
            for conn in conns:
                await conn.close()
        report.notes.append(
            "TTFT steps come from stream ids (Valkey's ms clock) and the client's wall clock "
            "on the same host: each step is +-1 ms."
        )
    finally:
        stack.stop()
    # The same at zero model latency: everything until the first token at the client,
    # the offline model's own keyword work (~3 ms) included.
    stack = start_stack(ttft_ms=0.0)
    try:
        conn = RawHttp(HOST, stack.app_port)
        try:
            run = secrets.token_hex(3)
            got = [await one_ttft(conn, t) for t in tokens(f"z{run}", 20 if quick else 40)][5:]
        finally:
            await conn.close()
        first = [t.received - t.submitted for t in got]
        label = f"model at zero latency, 1 client ({len(got)} tasks): first token p50"
        report.add(section, label, ms(pct(first, 50)))
        report.add(section, label.replace("p50", "p99"), ms(pct(first, 99)))
    finally:
        stack.stop()


# --------------------------------------------------------------------------- phase 4


class CountingRedis:
    """A RedisPort that counts top-level commands as Upstash bills them.

    EVALSHA/EVAL counts once (the commands inside the script are not billed);
    a pipeline counts each of its commands. Token traffic is counted apart, as
    `XADD token` (a token batch written) and `XREAD token` (a read that got tokens).
    """

    def __init__(self, inner: RedisPort) -> None:
        self.inner = inner
        self.kind: Literal["tcp", "rest"] = inner.kind
        self.calls: Counter[str] = Counter()

    async def execute(self, *args: Arg) -> Any:
        name = str(args[0]).upper()
        token = name == "XADD" and "token" in args[3:6]
        self.calls[f"{name} token" if token else name] += 1
        return await self.inner.execute(*args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        for command in commands:
            self.calls[str(command[0]).upper()] += 1
        return await self.inner.pipeline(commands)

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        self.calls["EVALSHA"] += 1
        return await self.inner.evalsha(sha, keys, args)

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        entries = await self.inner.xread(key, after_id, count=count, block_ms=block_ms)
        token = any(fields.get("type") == "token" for _, fields in entries)
        self.calls["XREAD token" if token else "XREAD"] += 1
        return entries

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        found = await self.inner.xread_streams(streams, count=count, block_ms=block_ms)
        token = any(fields.get("type") == "token" for _, (_, fields) in found)
        self.calls["XREAD token" if token else "XREAD"] += 1
        return found

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingPublisher:
    """Stands in for QStash in phase 4: keeps what would be delivered."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def publish_task(
        self, route: Any, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str:
        self.messages.append((str(route.path), body))
        return f"msg_{task_id}"


# Connection set-up and this bench's own INFO/CONFIG calls are not per-task work.
NOT_TASK_WORK = ("info", "config", "client", "hello", "select", "auth", "ping")


async def commandstats(admin: RedisPort) -> Counter[str]:
    """Calls per command since the last CONFIG RESETSTAT (server side, Lua included)."""
    text = str(await admin.execute("INFO", "commandstats"))
    stats: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, rest = line[len("cmdstat_") :].partition(":")
        calls = int(rest.split("calls=", 1)[1].split(",", 1)[0])
        if name.split("|", 1)[0] not in NOT_TASK_WORK:
            stats[name.upper()] += calls
    return stats


async def measured(
    admin: RedisPort, counting: Sequence[CountingRedis], work: Callable[[], Awaitable[Any]]
) -> tuple[Counter[str], Counter[str]]:
    """(top-level calls, server-side calls) spent by `work` alone."""
    for c in counting:
        c.calls.clear()
    await admin.execute("CONFIG", "RESETSTAT")
    await work()
    server = await commandstats(admin)
    top: Counter[str] = Counter()
    for c in counting:
        top.update(c.calls)
    return top, server


def fmt_calls(calls: Counter[str], n: int) -> str:
    return ", ".join(f"{k} {v / n:g}" for k, v in calls.most_common())


async def phase_commands(report: Report, *, quick: bool) -> None:
    """Redis commands per task: producer, worker, one events reader, each counted alone."""
    from lib.local.offline.model import start_offline_model
    from lib.local.qstash.signing import sign
    from lib.settings import Settings
    from producer.app import create_app as create_producer
    from worker.app import create_app as create_worker

    n = 6 if quick else 10
    say(f"phase 4: Redis commands per task ({n} tasks, ~1 s of streaming each)")
    valkey = EmbeddedValkey()
    url = valkey.start()
    model = start_offline_model(tokens_per_s=STREAM_TOKENS_PER_S)
    tmp = tempfile.TemporaryDirectory(prefix="slotline-bench-")
    base = "http://bench.invalid"
    values: dict[str, Any] = {
        "redis_url": url,
        "app_secret": SECRET,
        "app_base_url": base,
        "qstash_current_signing_key": DEV_CURRENT_SIGNING_KEY,
        "qstash_next_signing_key": DEV_NEXT_SIGNING_KEY,
        "offline_model_url": model.url,
        "state_dir": Path(tmp.name),
        "sse_max_seconds": 15.0,
        **{k.lower(): int(v) for k, v in LIMITS.items()},
    }
    settings = Settings(**values)
    hung = 0
    admin = TcpRedis.from_url(url)
    producer_redis = CountingRedis(TcpRedis.from_url(url))
    worker_redis = CountingRedis(TcpRedis.from_url(url))
    reader_redis = CountingRedis(TcpRedis.from_url(url))
    publisher = RecordingPublisher()
    producer = create_producer(settings, redis=producer_redis, publisher=publisher)
    reader = create_producer(settings, redis=reader_redis, publisher=RecordingPublisher())
    worker = create_worker(settings, redis=worker_redis)
    run = secrets.token_hex(3)

    def client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base, timeout=60)

    async def submit(c: httpx.AsyncClient, token: str) -> str:
        r = await c.post("/api/tasks", content=BODY_BYTES, headers=_bearer(token))
        r.raise_for_status()
        return str(r.json()["task_id"])

    async def deliver(c: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
        nonlocal hung
        raw = json.dumps(body).encode()
        headers = {
            "Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=base + path, body=raw),
            "Upstash-Message-Id": f"msg_{body['task_id']}",
            "Content-Type": "application/json",
        }
        try:
            r = await asyncio.wait_for(c.post(path, content=raw, headers=headers), 15)
        except TimeoutError:
            hung += 1  # counted and reported: the figures then miss this task's finish
            return
        r.raise_for_status()

    async def read_events(c: httpx.AsyncClient, task_id: str, token: str) -> str:
        r = await c.get(f"/api/tasks/{task_id}/events", headers=_bearer(token))
        r.raise_for_status()
        return r.text

    try:
        async with contextlib.AsyncExitStack() as stack:
            for app in (producer, reader, worker):
                await stack.enter_async_context(app.router.lifespan_context(app))
            pc, rc, wc = client(producer), client(reader), client(worker)
            for c in (pc, rc, wc):
                await stack.enter_async_context(c)

            # Warm-up: scripts cached (EVALSHA hits), pools connected, LLM layer imported.
            warm_tok = tokens(f"c{run}", 1)[0]
            warm_id = await submit(pc, warm_tok)
            await deliver(wc, *publisher.messages.pop())
            await read_events(rc, warm_id, warm_tok)

            toks = tokens(f"p{run}", n)
            ids: list[str] = []

            async def produce() -> None:
                for t in toks:
                    ids.append(await submit(pc, t))

            p_top, p_srv = await measured(admin, [producer_redis], produce)
            msgs = list(publisher.messages)
            publisher.messages.clear()

            async def work() -> None:
                await asyncio.gather(*(deliver(wc, path, body) for path, body in msgs))

            w_top, w_srv = await measured(admin, [worker_redis], work)
            streams = await _stream_stats(admin, [body for _, body in msgs])

            async def read_one() -> None:
                await read_events(rc, ids[0], toks[0])

            r_top, r_srv = await measured(admin, [reader_redis], read_one)

            # A live reader: connected while the task streams (blocking XREAD per batch).
            live_tok = tokens(f"l{run}", 1)[0]
            live_id = await submit(pc, live_tok)
            path, body = publisher.messages.pop()
            reader_redis.calls.clear()
            reading = asyncio.create_task(read_events(rc, live_id, live_tok))
            await asyncio.sleep(0.05)
            await deliver(wc, path, body)
            await reading
            live_top = Counter(reader_redis.calls)
            live_stream = (await _stream_stats(admin, [body]))[0]
    finally:
        for port in (producer_redis, worker_redis, reader_redis, admin):
            await port.aclose()
        model.stop()
        valkey.stop()
        tmp.cleanup()

    if hung:
        report.add(
            "4. Redis commands per task (billed = top level, EVALSHA once)",
            "deliveries that never returned (15 s)",
            str(hung),
            "0",
            False,
        )
    _report_commands(
        report, n, (p_top, p_srv), (w_top, w_srv), (r_top, r_srv), streams, live_top, live_stream
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class StreamStats:
    """One task's token events: how many, and over how long (first to last)."""

    token_events: int
    seconds: float


async def _stream_stats(redis: RedisPort, bodies: Sequence[dict[str, Any]]) -> list[StreamStats]:
    out: list[StreamStats] = []
    for body in bodies:
        key = f"cs:events:{body['user_id']}:{body['service_id']}:{body['task_id']}"
        entries = await redis.execute("XRANGE", key, "-", "+")
        stamps = [_id_s(str(i)) for i, f in entries if pairs_to_dict(f).get("type") == "token"]
        span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
        out.append(StreamStats(len(stamps), span))
    return out


def _report_commands(
    report: Report,
    n: int,
    producer: tuple[Counter[str], Counter[str]],
    worker: tuple[Counter[str], Counter[str]],
    reader: tuple[Counter[str], Counter[str]],
    streams: Sequence[StreamStats],
    live: Counter[str],
    live_stream: StreamStats,
) -> None:
    section = "4. Redis commands per task (billed = top level, EVALSHA once)"
    windows = sum(s.seconds for s in streams) / 0.05
    live_windows = live_stream.seconds / 0.05
    p_billed = producer[0].total() / n
    w_billed = worker[0].total() / n
    w_token = worker[0]["XADD token"] / n
    r_token = live["XREAD token"]
    fixed = p_billed + (w_billed - w_token) + (live.total() - r_token)
    w_rate = worker[0]["XADD token"] / windows if windows else math.nan
    r_rate = r_token / live_windows if live_windows else math.nan
    rate = w_rate + r_rate
    report.add(section, "producer: billed", f"{p_billed:g}")
    report.add(section, "producer: server-side (Lua incl.)", f"{producer[1].total() / n:g}")
    report.add(section, "worker: billed", f"{w_billed:g}")
    report.add(section, "worker: server-side (Lua incl.)", f"{worker[1].total() / n:g}")
    report.add(section, "worker: billed without token XADDs", f"{w_billed - w_token:g}")
    report.add(section, "worker: token XADDs per 50 ms", f"{w_rate:.2f}")
    report.add(section, "streaming per task (1st..last token)", ms(windows * 0.05 / n))
    report.add(section, "reader after the end: billed (= server)", f"{reader[0].total()}")
    report.add(section, "live reader: billed (= server)", f"{live.total()}")
    report.add(section, "live reader: without token reads", f"{live.total() - r_token}")
    report.add(section, "live reader: token reads per 50 ms", f"{r_rate:.2f}")
    report.add(section, "fixed/task (prod+worker+live reader)", f"{fixed:g}", "<= 10", fixed <= 10)
    report.add(section, "per 50 ms (worker+live reader)", f"{rate:.2f}", "<= 2", rate <= 2)
    report.add(section, "per 50 ms (worker alone)", f"{w_rate:.2f}", "<= 2", w_rate <= 2)
    report.notes.append(f"producer billed/task: {fmt_calls(producer[0], n)}")
    report.notes.append(f"producer server-side/task: {fmt_calls(producer[1], n)}")
    report.notes.append(f"worker billed/task: {fmt_calls(worker[0], n)}")
    report.notes.append(f"worker server-side/task: {fmt_calls(worker[1], n)}")
    report.notes.append(f"reader after the end: {fmt_calls(reader[0], 1)}")
    report.notes.append(f"live reader: {fmt_calls(live, 1)}")
    report.notes.append(
        "the lease is renewed every lease_ms/3 (10 s by default): +1 EVALSHA per 10 s of "
        "running, not visible in 1 s streams; without Postgres no usage drain runs."
    )


# --------------------------------------------------------------------------- phase 5

IMPORT_PROBE = """
import json, sys, time
t = time.perf_counter()
{imports}
elapsed = time.perf_counter() - t
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"langchain_openai", "langchain_core",
    "langchain", "openai", "qstash", "tiktoken"}})
print(json.dumps({{"s": elapsed, "heavy": heavy}}))
"""


# The worker's cold start: import, then the app's start-up (LLM runner, langchain_openai).
# Nothing connects: redis-py and the HTTP clients connect on first use.
WORKER_START = """
import asyncio
from lib.settings import Settings
from worker.app import create_app
app = create_app(Settings(redis_url="redis://127.0.0.1:9/0", app_base_url="http://127.0.0.1:9",
    qstash_current_signing_key="k1", qstash_next_signing_key="k2",
    offline_model_url="http://127.0.0.1:9/v1"))
async def start():
    async with app.router.lifespan_context(app):
        pass
asyncio.run(start())
"""


# The deployed combined app (api/index.py) and its start-up, as Vercel/Lambda cold-start it.
DEPLOY_START = """
import asyncio
async def start():
    async with api.index.app.router.lifespan_context(api.index.app):
        pass
asyncio.run(start())
"""
DEPLOY_ENV = {
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "QSTASH_TOKEN": "bench",
    "QSTASH_CURRENT_SIGNING_KEY": "k1",
    "QSTASH_NEXT_SIGNING_KEY": "k2",
    "APP_BASE_URL": "http://127.0.0.1:9",
    "APP_SECRET": SECRET,
}


def time_import(
    modules: Sequence[str],
    runs: int,
    *,
    code: str = "",
    extra_env: dict[str, str] | None = None,
) -> tuple[float, float, list[str]]:
    """(min import seconds, min whole-process seconds, heavy modules loaded) over `runs`.

    `code`, when given, runs after the imports and is timed with them.
    """
    body = "\n".join(f"import {m}" for m in modules) + code
    code = IMPORT_PROBE.format(imports=body)
    best_import = best_process = math.inf
    heavy: list[str] = []
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | (extra_env or {})
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [PY, "-c", code], cwd=ROOT, env=env, capture_output=True, check=True, text=True
        )
        best_process = min(best_process, time.perf_counter() - t0)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        best_import = min(best_import, float(probe["s"]))
        heavy = list(probe["heavy"])
    return best_import, best_process, heavy


def top_imports(module: str, n: int = 6) -> str:
    """Import time of `module` by top-level package (sum of self times, `-X importtime`)."""
    out = subprocess.run(
        [PY, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    )
    costs: Counter[str] = Counter()
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        self_us = int(parts[0].removeprefix("import time:"))
        costs[parts[2].strip().split(".")[0]] += self_us
    return ", ".join(f"{k} {v / 1000:.0f} ms" for k, v in costs.most_common(n))


def phase_imports(report: Report, *, quick: bool) -> None:
    """Cold import time of the producer and the worker entry points."""
    say("phase 5: cold imports")
    runs = 3 if quick else 5
    section = "5. cold import (fresh interpreter, min of runs)"
    p_imp, p_proc, p_heavy = time_import(["producer.app"], runs)
    report.add(section, "producer.app import", ms(p_imp), "<= 500 ms", p_imp <= 0.5)
    report.add(section, "producer.app whole process", ms(p_proc))
    no_llm = not {"langchain_openai", "langchain_core", "openai"} & set(p_heavy)
    report.add(
        section,
        "LLM libs loaded by producer.app",
        ", ".join(p_heavy) or "none",
        "no langchain/openai",
        no_llm,
    )
    w_imp, w_proc, w_heavy = time_import(["worker.app", "worker.llm"], max(2, runs - 2))
    report.add(section, "worker.app + worker.llm import", ms(w_imp))
    report.add(section, "worker.app + worker.llm whole process", ms(w_proc))
    s_imp, _, _ = time_import([], max(2, runs - 2), code=WORKER_START)
    report.add(section, "worker cold start (import + app start-up)", ms(s_imp))
    if (ROOT / "api" / "index.py").exists():
        a_imp, _, a_heavy = time_import(["api.index"], runs, extra_env=DEPLOY_ENV)
        report.add(section, "api.index (deployed combined app) import", ms(a_imp))
        d_imp, _, d_heavy = time_import(
            ["api.index"], max(2, runs - 2), code=DEPLOY_START, extra_env=DEPLOY_ENV
        )
        report.add(section, "api.index cold start (import + start-up)", ms(d_imp))
        report.notes.append(
            f"api.index import loads: {', '.join(a_heavy) or 'none'}; "
            f"after start-up: {', '.join(d_heavy) or 'none'}"
        )
    report.notes.append(f"heaviest imports under producer.app: {top_imports('producer.app')}")
    report.notes.append(f"worker entry loads: {', '.join(w_heavy) or 'none'}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--only", choices=["submit", "ttft", "commands", "imports"], action="append"
    )
    args = parser.parse_args(argv)
    only = set(args.only or ["submit", "ttft", "commands", "imports"])
    report = Report()
    started = time.monotonic()
    if "submit" in only:
        asyncio.run(phase_submit_and_throughput(report, quick=args.quick))
    if "ttft" in only:
        asyncio.run(phase_ttft(report, quick=args.quick))
    if "commands" in only:
        asyncio.run(phase_commands(report, quick=args.quick))
    if "imports" in only:
        phase_imports(report, quick=args.quick)
    say(f"\n== slotline pipeline bench ({os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s)")
    say(report.render())
    missed = report.missed()
    if missed:
        say(f"\nmissed targets: {', '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
