"""`slotline dev` (the real CLI) as a child process that can be killed and started again.

`DevProcess` runs `python -m lib.app.cli dev --state-dir X --port P`, waits for its `ready`
line, and after `kill()` (SIGKILL of the CLI process only: its guard stops the embedded
Valkey and Postgres) `start()` runs it again on the same folder and port, so the app keeps
its URL and QStash's kept messages still reach it. It satisfies `client.Target`; its
Redis and database URLs come from the stack's own `stack.json` (embedded servers only).
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from lib.app.stack import read_stack_file
from lib.auth import issue_token
from lib.local.embedded import VALKEY_PID_FILE, free_port, reclaim_postgres, reclaim_valkey
from tests.faults.harness import HOST, clean_env
from tests.support.paths import ROOT


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


@dataclass
class DevProcess:
    """One `slotline dev` on a state folder and a fixed port; see the module docstring."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # settings on top of a clean env
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    qstash_url: str = ""
    starts: int = 0
    _log: IO[str] | None = field(default=None, repr=False)

    @property
    def app_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def worker_url(self) -> str:
        """The combined app serves the worker too."""
        return self.app_url

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / "dev.log"

    def token(self, user_id: str, ttl_s: int = 3600) -> str:
        """A bearer token signed with the stack's own secret (`state_dir/app_secret`)."""
        secret = (self.state_dir / "app_secret").read_text().strip()
        return issue_token(secret, user_id, ttl_s)

    def stack_file(self) -> dict[str, Any]:
        """The running stack's `stack.json` (URLs of the embedded servers).

        Raises:
            RuntimeError: no stack runs on the folder.
        """
        data = read_stack_file(self.state_dir)
        if data is None:
            raise RuntimeError(f"no stack.json in {self.state_dir}")
        return data

    @property
    def redis_url(self) -> str:
        return str(self.stack_file()["redis_url"])

    @property
    def database_url(self) -> str:
        return str(self.stack_file()["database_url"])

    def server_pids(self) -> dict[str, int]:
        """The embedded Valkey's and Postgres's pids, from their pid files."""
        found = {
            "valkey-server": _pid_in(self.state_dir / "valkey" / VALKEY_PID_FILE),
            "postgres": _pid_in(self.state_dir / "pg" / "pgdata" / "postmaster.pid"),
        }
        return {name: pid for name, pid in found.items() if pid is not None}

    def start(self, timeout_s: float = 60.0) -> None:
        """Start `slotline dev` and wait for its ready line.

        Raises:
            RuntimeError: no ready line within `timeout_s` (the log tail is in the message).
        """
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()  # the killed process's
        if self._log is None:
            self._log = self.log_path.open("a", encoding="utf-8")
        self.starts += 1
        self._log.write(f"\n--- start {self.starts} at {time.strftime('%H:%M:%S')} ---\n")
        self._log.flush()
        argv = [sys.executable, "-m", "lib.app.cli", "dev", "--state-dir", str(self.state_dir)]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            cwd=ROOT,
            env=clean_env() | self.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        out = self.proc.stdout
        assert out is not None

        def pump() -> None:
            for line in out:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"slotline dev: no ready line\n{self.log_tail()}") from None
        if not line.startswith(f"ready app={self.app_url} "):
            raise RuntimeError(f"slotline dev: unexpected output {line!r}\n{self.log_tail()}")
        self.qstash_url = line.split("qstash=", 1)[1].strip()

    def kill(self, *, wait_servers_s: float = 30.0) -> float:
        """SIGKILL the CLI process and wait until its guard stopped Valkey and Postgres.

        Returns:
            Seconds until the embedded servers had exited.

        Raises:
            RuntimeError: a server was still running after `wait_servers_s`.
        """
        assert self.proc is not None
        pids = self.server_pids()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        killed = time.monotonic()
        deadline = killed + wait_servers_s
        while any(_running(pid) for pid in pids.values()):
            if time.monotonic() > deadline:
                left = {name: pid for name, pid in pids.items() if _running(pid)}
                raise RuntimeError(f"still running after the kill: {left}")
            time.sleep(0.05)
        return time.monotonic() - killed

    def stop(self) -> None:
        """SIGTERM (a clean stop), then reclaim whatever a failure left on the folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        reclaim_valkey(self.state_dir / "valkey")
        reclaim_postgres(self.state_dir / "pg")
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is not None:
            self._log.flush()
        path = self.log_path
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
