"""The local stack: embedded Valkey and Postgres, local QStash, offline model and the app."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from lib.auth import app_secret
from lib.local.embedded import (
    EmbeddedPostgres,
    EmbeddedValkey,
    free_port,
    reclaim_postgres,
    reclaim_valkey,
)
from lib.local.serve import ServerThread
from lib.settings import Settings, secret

logger = logging.getLogger(__name__)

StackRedisMode = Literal["tcp", "rest"]
STACK_FILE = "stack.json"
# Held (flock) while a stack runs in the folder; the kernel lets go when the process dies.
LOCK_FILE = "stack.lock"
# The local QStash server keeps its state in another database of the same Valkey (and
# under its own key prefix): the app's commands can be told apart, e.g. in MONITOR.
QSTASH_DB = 1


@dataclass(frozen=True)
class StackInfo:
    """Where the running local stack answers, and the settings the app runs with."""

    app_url: str
    qstash_url: str
    redis_url: str
    database_url: str
    redis_mode: StackRedisMode
    state_dir: Path
    settings: Settings = field(repr=False, compare=False)
    rest_url: str | None = None
    offline_model_url: str | None = None


def needs_offline_model(settings: Settings) -> bool:
    """Whether some model has no provider: no OpenAI-compatible server and a provider key missing.

    Keys win over the offline model in endpoint resolution, so with only one provider key
    set the offline model still answers the other provider's models.
    """
    if settings.openai_compat_base_url:
        return False
    return settings.deepseek_api_key is None or settings.zhipuai_api_key is None


def with_db(redis_url: str, db: int) -> str:
    """The same Redis URL pointing at database `db`."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def run_sync(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion on a fresh loop in its own thread (safe inside a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="slotline-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def lock_state_dir(state_dir: Path) -> int:
    """Take the folder's lock: one running stack per state folder.

    Returns:
        The lock's file descriptor (closing it releases the lock).

    Raises:
        RuntimeError: another running stack holds it (the message names its pid).
    """
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(
            f"another local stack (pid {holder}) runs with the state folder {state_dir}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def read_stack_file(state_dir: Path) -> dict[str, Any] | None:
    """The running local stack's `stack.json`, or None when none is running there."""
    path = Path(state_dir) / STACK_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    pid = data.get("pid")
    if isinstance(pid, int) and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.info("ignoring stale %s (process %s is gone)", path, pid)
            return None
        except PermissionError:
            pass  # alive, owned by someone else
    return data


class LocalStack:
    """Every server `slotline dev`, `make demo` and the end-to-end tests need, on loopback.

    What the settings configure is used as is (`REDIS_URL`, `DATABASE_URL`, provider keys,
    `APP_SECRET`); everything else is started here. State (Valkey data, Postgres data, the
    generated app secret) lives in `state_dir`, which is git-ignored.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        redis_mode: StackRedisMode = "tcp",
        state_dir: Path = Path(".slotline"),
        time_scale: float = 1.0,
        persist: bool = True,
        write_stack_file: bool = True,
    ) -> None:
        self.settings = settings
        self.port = port
        self.redis_mode = redis_mode
        self.state_dir = Path(state_dir)
        self.time_scale = time_scale
        self.persist = persist
        self.write_stack_file = write_stack_file
        self.info: StackInfo | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def start(self) -> StackInfo:
        """Start every part, apply migrations, serve the app; stop what started on failure.

        Returns:
            The URLs and effective settings of the running stack.

        Raises:
            RuntimeError: a server did not come up (the port is taken, …).
            OSError: the state folder cannot be written.
            psycopg.Error: the migrations failed.
        """
        try:
            self.info = self._start()
        except BaseException:
            self.stop()
            raise
        return self.info

    def _start(self) -> StackInfo:
        from lib.local.qstash import start_local_qstash

        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_state_dir(self.state_dir)
        self._stops.append(("state folder lock", lambda: os.close(lock)))
        base = self.settings
        if self.persist:
            # Holding the lock, anything still running on these folders is an orphan of a
            # stack that died (with its guard): it must stop before its data is reused.
            if not base.redis_url:
                reclaim_valkey(self.state_dir / "valkey")
            if not secret(base.database_url):
                reclaim_postgres(self.state_dir / "pg")

        redis_url = base.redis_url
        if not redis_url:
            valkey = EmbeddedValkey(self.state_dir / "valkey" if self.persist else None)
            redis_url = valkey.start()
            self._stops.append(("valkey", valkey.stop))

        database_url = secret(base.database_url)
        if not database_url:
            postgres = EmbeddedPostgres(self.state_dir / "pg" if self.persist else None)
            database_url = postgres.start()
            self._stops.append(("postgres", postgres.stop))
        from lib.db.migrate import migrate

        applied = run_sync(lambda: migrate(database_url))
        if applied:
            logger.info("applied migrations %s", ", ".join(applied))

        # A refused connection to the app, which is not up yet (it starts last), costs a
        # message no retry: deliveries wait for it instead of backing off (delivery.py).
        qstash = start_local_qstash(
            with_db(redis_url, QSTASH_DB),
            time_scale=self.time_scale,
            lease_s=base.qstash_local_lease_s,
        )
        self._stops.append(("qstash", qstash.stop))

        offline_url = base.offline_model_url
        if offline_url is None and needs_offline_model(base):
            from lib.local.offline.model import start_offline_model

            offline = start_offline_model(
                ttft_ms=base.offline_ttft_ms, tokens_per_s=base.offline_tokens_per_s
            )
            offline_url = offline.url
            self._stops.append(("offline model", offline.stop))

        rest_url: str | None = None
        update: dict[str, Any] = {"redis_url": redis_url}
        if self.redis_mode == "rest":
            from lib.local.upstash_rest import start_local_rest

            rest = start_local_rest(redis_url)
            self._stops.append(("upstash rest", rest.stop))
            rest_url = rest.url
            update = {
                "redis_url": None,
                "upstash_redis_rest_url": rest.url,
                "upstash_redis_rest_token": SecretStr(rest.token),
            }

        port = self.port or free_port()
        app_url = f"http://127.0.0.1:{port}"
        with_state = base.model_copy(update={"state_dir": self.state_dir})
        effective = base.model_copy(
            update={
                **update,
                "qstash_url": qstash.url,
                "qstash_token": SecretStr(qstash.token),
                "qstash_current_signing_key": SecretStr(qstash.current_key),
                "qstash_next_signing_key": SecretStr(qstash.next_key),
                "qstash_time_scale": self.time_scale,
                "app_base_url": app_url,
                "app_secret": SecretStr(app_secret(with_state)),
                "database_url": SecretStr(database_url),
                "offline_model_url": offline_url,
                "state_dir": self.state_dir,
                "worker_preload_llm": True,
            }
        )
        from lib.app.asgi import create_app

        server = ServerThread(create_app(effective), port=port)
        # Registered first: a start that times out still leaves a thread to stop.
        self._stops.append(("app", server.stop))
        try:
            server.start(timeout=60.0)
        except RuntimeError as exc:
            raise RuntimeError(f"the app did not start on {app_url} (port taken?)") from exc

        info = StackInfo(
            app_url=app_url,
            qstash_url=qstash.url,
            redis_url=redis_url,
            database_url=database_url,
            redis_mode=self.redis_mode,
            state_dir=self.state_dir,
            rest_url=rest_url,
            offline_model_url=offline_url,
            settings=effective,
        )
        if self.write_stack_file:
            self._write_stack_file(info, embedded_redis=not base.redis_url)
        return info

    def _write_stack_file(self, info: StackInfo, *, embedded_redis: bool) -> None:
        """`stack.json` for the CLI in another terminal: URLs only, never a configured secret."""
        data: dict[str, Any] = {
            "pid": os.getpid(),
            "app_url": info.app_url,
            "qstash_url": info.qstash_url,
            "redis_mode": info.redis_mode,
            "offline_model_url": info.offline_model_url,
        }
        # Embedded servers listen on loopback without a password: their URLs are not
        # secrets. Configured ones may carry credentials and stay in the environment.
        if embedded_redis:
            data["redis_url"] = info.redis_url
        if self.settings.database_url is None:
            data["database_url"] = info.database_url
        path = self.state_dir / STACK_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        self._stops.append(("stack file", lambda: path.unlink(missing_ok=True)))

    def stop(self) -> None:
        """Stop every part that started, in reverse order; safe to call twice."""
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception:
                logger.exception("stopping the %s failed", name)
            else:
                logger.debug("stopped the %s", name)
        self.info = None

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_health(info: StackInfo, *, timeout_s: float = 10.0) -> None:
    """Wait until every part answers: the app (and Redis behind it), worker, QStash, model.

    Args:
        info: the running stack.
        timeout_s: how long to keep trying.

    Raises:
        RuntimeError: a part still does not answer after `timeout_s`; the message names it.
    """
    import time

    import httpx

    token = secret(info.settings.qstash_token) or ""
    checks: list[tuple[str, str, dict[str, str]]] = [
        ("app", f"{info.app_url}/healthz", {}),
        ("worker", f"{info.app_url}/api/worker/healthz", {}),
        ("redis (via the app)", f"{info.app_url}/api/queues", {}),
        ("qstash", f"{info.qstash_url}/v2/keys", {"Authorization": f"Bearer {token}"}),
    ]
    if info.offline_model_url:
        checks.append(("offline model", f"{info.offline_model_url}/models", {}))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        for name, url, headers in checks:
            while True:
                try:
                    if client.get(url, headers=headers).status_code == 200:
                        break
                    reason = "bad status"
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} does not answer at {url} ({reason})")
                time.sleep(0.05)
