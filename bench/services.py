"""Services benchmark (issue #11): wall time, result-cache hit rate, Redis commands, imports.

The local stack in process (`lib/app/stack.py`: embedded Valkey and Postgres, the local
QStash server at time scale 1, the offline model, the combined app on loopback), driven
over HTTP as a client would: uploads, `POST /api/service/create`, the service's SSE
stream, `GET /api/service/{id}`. Signed-in free-tier users; the pools at their defaults
(glm-4.5-flash: 2 slots), the rate limits raised (the bench creates more services than a
user may). Figures are printed; this is not a test.

1. wall time: create → the service's terminal event, depth `a` (résumé + job) `--runs`
   times and depth `c` (résumé + detailed résumé + job) `--runs-c` times, each by a new
   user (nothing cached), on the offline model at zero latency; after one warm-up service.
2. result cache: one user, 4 résumés and 6 job descriptions (variations of `examples/`),
   20 depth-`a` services over 20 distinct pairs, one after the other; hit rate = summaries
   served from the summary cache / summaries needed. Then the same with 3 in flight (the
   most pending services a user may have).
3. Redis commands per service: a second stack whose offline model is paced like a
   provider (200 ms to the first token, 350 tokens/s), and the service's events read
   through a second producer app with its own Redis connections (its client name tells
   them apart). Every command the Valkey runs is taken from MONITOR (database, client,
   inside a script or not): the pipeline's (producer, worker, transitions), the reader's,
   and the local QStash server's (database 1, not the app's Redis in production);
   `INFO commandstats` / `total_commands_processed` deltas over the same window.
4. cold import: `python -c "import producer.app"` in fresh interpreters, median of 7.

    .venv/bin/python bench/services.py [--runs 10] [--runs-c 3] [--quick] [--only PHASE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, whatever the venv points at

import httpx  # noqa: E402

from bench.pipeline import Report, ms, say  # noqa: E402
from lib.app.demo import sse_events  # noqa: E402
from lib.app.stack import LocalStack, StackInfo, check_health  # noqa: E402
from lib.auth import issue_token  # noqa: E402
from lib.local.example_files import detailed_resume, example  # noqa: E402
from lib.settings import secret  # noqa: E402
from tests.support.stack import local_settings  # noqa: E402

PY = sys.executable
SUMMARIES = ("resume_summary", "detailed_resume_summary", "job_summary")
LIMITS = {
    "rate_user_limit": 100_000,
    "rate_trial_limit": 100_000,
    "rate_trial_address_limit": 0,
}
PACED = {"offline_ttft_ms": 200.0, "offline_tokens_per_s": 350.0}
READER_NAME = "bench-reader"
ADMIN_NAME = "bench-admin"
# Commands a connection sends when it opens (redis-py): counted apart.
CONNECT = ("CLIENT", "HELLO", "SELECT", "AUTH")
RESUMES = (  # name, e-mail, city, a queue, an infrastructure tool
    ("Maya Chen", "maya.chen", "Shanghai, China", "Celery", "Terraform"),
    ("Arjun Mehta", "arjun.mehta", "Bangalore, India", "Kafka", "Pulumi"),
    ("Sofia Rossi", "sofia.rossi", "Milan, Italy", "RabbitMQ", "Ansible"),
    ("Kenji Sato", "kenji.sato", "Tokyo, Japan", "Dramatiq", "CloudFormation"),
)
JOBS = (  # title, company, years, an orchestrator
    ("Senior Python Backend Engineer, AI Platform", "Northwind Labs", 5, "Kubernetes"),
    ("Backend Engineer, LLM Infrastructure", "Contoso AI", 4, "Nomad"),
    ("Staff Engineer, Model Serving", "Fabrikam Cloud", 8, "Kubernetes"),
    ("Python Engineer, Data Platform", "Tailspin Data", 3, "ECS"),
    ("Platform Engineer, Async Services", "Litware Health", 6, "OpenShift"),
    ("Senior Software Engineer, Job Search", "Adatum Jobs", 5, "Docker Swarm"),
)


def resume_variant(i: int) -> str:
    """The example résumé with another person's name, contact, city and two skills."""
    name, mail, city, queue, infra = RESUMES[i]
    text = example("resume.en.txt")
    for old, new in (
        ("Maya Chen", name),
        ("maya.chen", mail),
        ("mayachen", mail.replace(".", "")),
        ("Shanghai, China", city),
        ("Celery", queue),
        ("Terraform", infra),
    ):
        text = text.replace(old, new)
    return text


def job_variant(i: int) -> str:
    """The example job description for another title, company, seniority and orchestrator."""
    title, company, years, orchestrator = JOBS[i]
    text = example("job.en.txt")
    for old, new in (
        ("Senior Python Backend Engineer, AI Platform", title),
        ("Northwind Labs", company),
        ("5+ years", f"{years}+ years"),
        ("Kubernetes", orchestrator),
    ):
        text = text.replace(old, new)
    return text


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def spread(values: Sequence[float]) -> str:
    """`median (min–max, n=N)` in ms."""
    if not values:
        return "-"
    return (
        f"{ms(statistics.median(values))} ({min(values) * 1000:.0f}–{max(values) * 1000:.0f} ms,"
        f" n={len(values)})"
    )


# --------------------------------------------------------------------------- the stack


def start_stack(folder: Path, **update: Any) -> tuple[LocalStack, StackInfo]:
    settings = local_settings().model_copy(update={**LIMITS, **update})
    local = LocalStack(settings, state_dir=folder, persist=False, write_stack_file=False)
    info = local.start()
    try:
        check_health(info)
    except BaseException:
        local.stop()
        raise
    return local, info


@dataclass
class Followed:
    """A service followed to its end over SSE."""

    terminal: dict[str, Any]
    client_s: float  # create request sent → terminal event received
    server_s: float  # the admission's event → the terminal one (stream ids: Redis clock)
    events: Counter[str] = field(default_factory=Counter)


class Api:
    """The app's HTTP API as a signed-in client uses it."""

    def __init__(self, info: StackInfo, http: httpx.AsyncClient) -> None:
        self.info = info
        self.http = http
        self.secret = secret(info.settings.app_secret) or ""

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.secret, user, 3600)}"}

    async def upload(self, user: str, route: str, text: str) -> str:
        reply = await self.http.post(
            f"/api/upload/{route}", json={"text": text, "lang": "en"}, headers=self.headers(user)
        )
        if reply.status_code != 201:
            raise RuntimeError(f"upload {route}: {reply.status_code} {reply.text}")
        body = reply.json()
        return str(next(v for k, v in body.items() if k.endswith("_id")))

    async def inputs(self, user: str, *, detailed: bool) -> dict[str, str]:
        ids = {
            "resume_id": await self.upload(user, "resume", example("resume.en.txt")),
            "job_id": await self.upload(user, "jd", example("job.en.txt")),
        }
        if detailed:
            ids["detailed_resume_id"] = await self.upload(
                user, "detailed-resume", detailed_resume("en")
            )
        return ids

    async def create(self, user: str, ids: dict[str, str], depth: str) -> dict[str, Any]:
        body = {**ids, "depth": depth, "lang": "en"}
        reply = await self.http.post("/api/service/create", json=body, headers=self.headers(user))
        if reply.status_code != 202:
            raise RuntimeError(f"create: {reply.status_code} {reply.text}")
        created: dict[str, Any] = reply.json()
        return created

    async def follow(
        self, user: str, events_url: str, sent: float, base_url: str | None = None
    ) -> Followed:
        """Read the service's SSE stream to its terminal event (resuming if it is cut)."""
        first_ms: int | None = None
        last_id: str | None = None
        seen: Counter[str] = Counter()
        url = (base_url or "") + events_url
        for _ in range(20):
            headers = {**self.headers(user), "Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            async with self.http.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise RuntimeError(f"events: {response.status_code} {response.text}")
                async for event in sse_events(response):
                    last_id = event.id or last_id
                    seen[event.type] += 1
                    if event.type != "service" or not event.id:
                        continue
                    at = int(event.id.split(".")[0].split("-")[0])
                    first_ms = at if first_ms is None else first_ms
                    data = event.data if isinstance(event.data, dict) else {}
                    if data.get("status") in ("done", "error"):
                        return Followed(
                            data, time.perf_counter() - sent, (at - first_ms) / 1000, seen
                        )
        raise RuntimeError("the service's stream never ended")

    async def status(self, user: str, service_id: str) -> dict[str, Any]:
        reply = await self.http.get(f"/api/service/{service_id}", headers=self.headers(user))
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        return body

    async def run(
        self, user: str, ids: dict[str, str], depth: str, reader_url: str | None = None
    ) -> tuple[Followed, dict[str, Any]]:
        """One service: create, follow to its end, read its status."""
        sent = time.perf_counter()
        created = await self.create(user, ids, depth)
        followed = await self.follow(user, created["events_url"], sent, reader_url)
        status = await self.status(user, created["service_id"])
        if status["status"] != "done":
            raise RuntimeError(f"service ended {status['status']}: {status.get('error')}")
        return followed, status


# --------------------------------------------------------------------------- phases


async def phase_wall(info: StackInfo, report: Report, runs_a: int, runs_c: int) -> None:
    section = "1. service wall time (create → terminal event; offline model, zero latency)"
    say(f"phase 1: wall time, depth a x{runs_a}, depth c x{runs_c} (load {load()})")
    tag = os.urandom(3).hex()
    async with httpx.AsyncClient(base_url=info.app_url, timeout=120) as http:
        api = Api(info, http)
        await api.run(f"w{tag}-warm", await api.inputs(f"w{tag}-warm", detailed=True), "c")
        for depth, runs in (("a", runs_a), ("c", runs_c)):
            client: list[float] = []
            server: list[float] = []
            for i in range(runs):
                user = f"w{tag}-{depth}{i}"
                ids = await api.inputs(user, detailed=depth == "c")
                followed, status = await api.run(user, ids, depth)
                assert all(s["status"] == "done" for s in status["steps"]), status
                client.append(followed.client_s)
                server.append(followed.server_s)
            steps = "3 summaries + 3 steps" if depth == "c" else "2 summaries + job_match"
            report.add(section, f"depth {depth} ({steps}), client", spread(client))
            report.add(section, f"depth {depth}, server (stream ids)", spread(server))
    report.notes.append(f"phase 1 load at its end: {load()}")


async def phase_cache(info: StackInfo, report: Report, *, concurrent: bool) -> None:
    section = "2. result cache (20 services, 4 résumés x 6 jobs, one user)"
    say(f"phase 2: result cache (load {load()})")
    pairs = random.Random(11).sample([(r, j) for r in range(4) for j in range(6)], 20)
    tag = os.urandom(3).hex()
    modes = [("one after the other", 1)] + ([("3 in flight", 3)] if concurrent else [])
    async with httpx.AsyncClient(base_url=info.app_url, timeout=120) as http:
        api = Api(info, http)
        for label, in_flight in modes:
            user = f"c{tag}-{in_flight}"
            started = time.perf_counter()
            hits = await _repeated_use(api, user, pairs, in_flight)
            took = time.perf_counter() - started
            needed = 2 * len(pairs)
            rate = sum(hits) / needed
            report.add(
                section,
                f"hit rate, {label}",
                f"{sum(hits)}/{needed} = {rate:.0%} ({took:.1f} s)",
                ">= 40%",
                rate >= 0.4,
            )
    distinct = 4 + 6
    report.notes.append(
        f"result cache: {distinct} distinct documents, so at most {needed - distinct}/{needed}"
        f" = {(needed - distinct) / needed:.0%} can hit; pairs drawn without repeats from the"
        " 24 (random.Random(11)); a summary is cached when its task ends, so services in"
        " flight together can both miss"
    )


async def _repeated_use(
    api: Api, user: str, pairs: Sequence[tuple[int, int]], in_flight: int
) -> list[int]:
    """Upload the 4 résumés and 6 jobs once, run a depth-a service per pair; the summaries
    each service got from the cache."""
    resumes = [await api.upload(user, "resume", resume_variant(i)) for i in range(4)]
    jobs = [await api.upload(user, "jd", job_variant(i)) for i in range(6)]
    gate = asyncio.Semaphore(in_flight)
    hits: list[int] = []

    async def one(r: int, j: int) -> None:
        async with gate:  # FIFO: with 1, one after the other in the pairs' order
            _, status = await api.run(user, {"resume_id": resumes[r], "job_id": jobs[j]}, "a")
        summaries = [s for s in status["steps"] if s["step"] in SUMMARIES]
        hits.append(sum(1 for s in summaries if s["cached"]))

    await asyncio.gather(*(one(r, j) for r, j in pairs))
    return hits


@dataclass
class Command:
    """One command MONITOR saw."""

    db: int
    client: str  # address:port, or "lua" inside a script
    name: str  # the command (EVALSHA with its script's name)


def _script_names() -> dict[str, str]:
    """SHA1 → script name, for every Lua script of the packages."""
    from importlib import resources

    from lib.redis.port import load_script

    names: dict[str, str] = {}
    for package in ("lib.tasks", "lib.services", "lib.usage", "lib.local.qstash"):
        folder = resources.files(package).joinpath("lua")
        for entry in folder.iterdir():
            if entry.name.endswith(".lua"):
                script = load_script(package, entry.name.removesuffix(".lua"))
                names[script.sha] = script.name
    return names


async def _monitor(url: str, sink: list[Command], ready: asyncio.Event) -> None:
    import redis.asyncio as aioredis

    scripts = _script_names()
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        async with client.monitor() as monitor:
            ready.set()
            async for entry in monitor.listen():
                words = str(entry["command"]).split()
                name = words[0].upper() if words else "?"
                if name in ("EVALSHA", "EVAL") and len(words) > 1:
                    name = f"EVALSHA {scripts.get(words[1], words[1][:8])}"
                elif name == "XADD" and "token" in words[3:6]:
                    name = "XADD token"
                elif name in CONNECT and len(words) > 1:
                    name = f"{name} {words[1].upper()}"
                kind = entry.get("client_type")
                who = (
                    "lua" if kind == "lua" else f"{entry['client_address']}:{entry['client_port']}"
                )
                sink.append(Command(int(entry["db"]), who, name))
    finally:
        await client.aclose()


async def _clients(admin: Any, name: str) -> set[str]:
    text = str(await admin.execute("CLIENT", "LIST"))
    out = set()
    for line in text.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("name") == name:
            out.add(fields.get("addr", ""))
    return out


async def _stats(admin: Any) -> tuple[int, Counter[str]]:
    info = str(await admin.execute("INFO", "stats"))
    total = next(
        int(line.split(":", 1)[1])
        for line in info.splitlines()
        if line.startswith("total_commands_processed:")
    )
    stats: Counter[str] = Counter()
    for line in str(await admin.execute("INFO", "commandstats")).splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_") :].partition(":")
            stats[name.upper()] += int(rest.split("calls=", 1)[1].split(",", 1)[0])
    return total, stats


def _fmt(calls: Counter[str], n: int = 8) -> str:
    return ", ".join(f"{k} {v}" for k, v in calls.most_common(n))


async def phase_commands(info: StackInfo, report: Report) -> None:
    from lib.local.serve import ServerThread
    from lib.redis.tcp import TcpRedis
    from producer.app import create_app as create_producer

    section = "3. Redis commands per service (MONITOR; paced offline model)"
    say(f"phase 3: Redis commands per service (load {load()})")
    sep = "&" if "?" in info.redis_url else "?"
    # The reader's app makes (and closes) its own Redis client, on its server's loop.
    reader_settings = info.settings.model_copy(
        update={"redis_url": f"{info.redis_url}{sep}client_name={READER_NAME}"}
    )
    admin = TcpRedis.from_url(f"{info.redis_url}{sep}client_name={ADMIN_NAME}")
    reader_app = ServerThread(create_producer(reader_settings))
    reader_url = reader_app.start(timeout=30)
    tag = os.urandom(3).hex()
    try:
        async with httpx.AsyncClient(base_url=info.app_url, timeout=120) as http:
            api = Api(info, http)
            warm = f"m{tag}-warm"
            await api.run(warm, await api.inputs(warm, detailed=True), "c", reader_url)
            for depth in ("a", "c"):
                user = f"m{tag}-{depth}"
                ids = await api.inputs(user, detailed=depth == "c")
                await _measure(api, admin, report, section, user, ids, depth, reader_url)
    finally:
        reader_app.stop()
        await admin.aclose()


async def _measure(
    api: Api,
    admin: Any,
    report: Report,
    section: str,
    user: str,
    ids: dict[str, str],
    depth: str,
    reader_url: str,
) -> None:
    """One service under MONITOR, with an idle second before it for the background rate."""
    seen: list[Command] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(_monitor(api.info.redis_url, seen, ready))
    await asyncio.wait_for(ready.wait(), 10)
    admin_addrs = await _clients(admin, ADMIN_NAME)
    await asyncio.sleep(1.0)
    idle = [c for c in seen if c.client not in admin_addrs]
    seen.clear()
    await admin.execute("CONFIG", "RESETSTAT")
    started = time.perf_counter()
    followed, status = await api.run(user, ids, depth, reader_url)
    await asyncio.sleep(1.0)  # what follows the end (the usage drain after a delivery)
    window = time.perf_counter() - started
    total, stats = await _stats(admin)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    readers = await _clients(admin, READER_NAME)
    admin_addrs |= await _clients(admin, ADMIN_NAME)
    app = [c for c in seen if c.db == 0 and c.client not in admin_addrs]
    setup = Counter(c.name for c in app if c.name.split()[0] in CONNECT)
    app = [c for c in app if c.name.split()[0] not in CONNECT]
    pipeline = Counter(c.name for c in app if c.client not in readers and c.client != "lua")
    inside = Counter(c.name for c in app if c.client == "lua")
    reader = Counter(c.name for c in app if c.client in readers)
    qstash = Counter(c.name for c in seen if c.db != 0 and c.client not in admin_addrs)
    idle_app = sum(1 for c in idle if c.db == 0 and c.name.split()[0] not in CONNECT)
    idle_qstash = sum(1 for c in idle if c.db != 0)
    tokens = sum(1 for c in app if c.name == "XADD token")
    summaries = sum(1 for s in status["steps"] if s["step"] in SUMMARIES)
    label = f"depth {depth} ({summaries}+{len(status['steps']) - summaries} steps)"
    report.add(section, f"{label}: window", f"{window:.1f} s (service {followed.server_s:.2f} s)")
    report.add(section, f"{label}: pipeline, billed (EVALSHA once)", str(pipeline.total()))
    appends = pipeline["EVALSHA append_token"]
    report.add(
        section,
        f"{label}: pipeline, billed less token appends",
        f"{pipeline.total() - appends} (+{appends} append_token)",
    )
    report.add(
        section,
        f"{label}: pipeline, server-side (Lua incl.)",
        str(pipeline.total() + inside.total()),
    )
    report.add(section, f"{label}: reader, billed (= server)", str(reader.total()))
    report.add(section, f"{label}: local QStash (db 1)", str(qstash.total()))
    report.add(
        section,
        f"{label}: commandstats / total_commands_processed",
        f"{sum(stats.values())} / {total}",
    )
    report.notes.append(f"{label} pipeline billed: {_fmt(pipeline, 30)}")
    report.notes.append(f"{label} inside scripts: {_fmt(inside, 10)} (token XADDs: {tokens})")
    report.notes.append(f"{label} reader: {_fmt(reader)}; events read {followed.events.total()}")
    report.notes.append(
        f"{label} idle second before: app {idle_app}, local QStash {idle_qstash} commands;"
        f" connection set-up in the window: {setup.total()}"
    )


IMPORT = "import time\nt = time.perf_counter()\nimport producer.app\nprint(time.perf_counter() - t)"


def phase_imports(report: Report, runs: int) -> None:
    section = "4. producer cold import (fresh interpreter)"
    say(f"phase 4: cold import x{runs} (load {load()})")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    imports: list[float] = []
    processes: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [PY, "-c", IMPORT], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        processes.append(time.perf_counter() - started)
        imports.append(float(out.stdout.strip().splitlines()[-1]))
    report.add(
        section,
        "import producer.app",
        spread(imports),
        "<= 500 ms",
        statistics.median(imports) <= 0.5,
    )
    report.add(section, 'python -c "import producer.app"', spread(processes))


# --------------------------------------------------------------------------- main

PHASES = ("wall", "cache", "commands", "imports")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="depth-a services timed")
    parser.add_argument("--runs-c", type=int, default=3, help="depth-c services timed")
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--only", choices=PHASES, action="append")
    args = parser.parse_args(argv)
    only = set(args.only or PHASES)
    runs_a, runs_c, imports = (4, 1, 3) if args.quick else (args.runs, args.runs_c, 7)
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    report = Report()
    started = time.monotonic()
    at_start = load()
    with tempfile.TemporaryDirectory(prefix="slotline-bench-services-") as tmp:
        if only & {"wall", "cache"}:
            local, info = start_stack(Path(tmp) / "unpaced")
            try:
                if "wall" in only:
                    asyncio.run(phase_wall(info, report, runs_a, runs_c))
                if "cache" in only:
                    asyncio.run(phase_cache(info, report, concurrent=not args.quick))
            finally:
                local.stop()
        if "commands" in only:
            local, info = start_stack(Path(tmp) / "paced", **PACED)
            try:
                asyncio.run(phase_commands(info, report))
            finally:
                local.stop()
    if "imports" in only:
        phase_imports(report, imports)
    say(
        f"\n== slotline services bench ({os.cpu_count()} CPUs, "
        f"{time.monotonic() - started:.0f} s, load {at_start} at start, {load()} at end)"
    )
    say(report.render())
    missed = report.missed()
    if missed:
        say(f"\nmissed targets: {', '.join(missed)}")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
