"""The small async Redis interface both adapters (TCP, REST) implement, and Lua scripts.

Replies use RESP2 shapes on both adapters (strings decoded as UTF-8, hashes as
flat lists), so a script or command behaves the same over TCP and REST.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

Arg = str | int | float
StreamEntry = tuple[str, dict[str, str]]
# An entry of a multi-stream read: the stream's key and the entry.
KeyedEntry = tuple[str, StreamEntry]


class NoScriptError(Exception):
    """The server does not know a script's SHA (adapters raise it; `run_script` handles it)."""


class RedisReplyError(Exception):
    """Redis answered a command with an error."""


@dataclass(frozen=True)
class Script:
    """A Lua script from a package's `lua/` folder, addressed by the SHA1 of its source."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


INCLUDE = "--! include "


def _read_lua(package: str, name: str) -> str:
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def load_script(package: str, name: str) -> Script:
    """Read `{package}/lua/{name}.lua` once from package resources.

    Each package keeps the scripts it owns next to its code (`lib.tasks`, `lib.services`,
    `lib.usage`, `lib.local.qstash`). A line `--! include other` is replaced by the
    package's `lua/other.lua`, `--! include pkg:other` by another package's (shared local
    functions: Redis scripts cannot load modules), so the server sees one script.
    """
    lines: list[str] = []
    for line in _read_lua(package, name).splitlines():
        if line.startswith(INCLUDE):
            target = line[len(INCLUDE) :].strip()
            owner, _, included = target.rpartition(":")
            lines.append(_read_lua(owner or package, included))
        else:
            lines.append(line)
    return Script(name, "\n".join(lines) + "\n")


class RedisPort(Protocol):
    """What slotline needs from Redis; nothing else talks to a Redis client."""

    kind: Literal["tcp", "rest"]

    async def execute(self, *args: Arg) -> Any:
        """Run one command; raise `RedisReplyError` on an error reply."""
        ...

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run several commands in one round trip (not atomic)."""
        ...

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA; raise `NoScriptError` when the script is not cached."""
        ...

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        """Entries of one stream after `after_id`; blocks up to `block_ms` where supported."""
        ...

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        """Entries of several streams (key, after id) in one command, by stream then id."""
        ...

    async def aclose(self) -> None: ...


async def run_script(
    redis: RedisPort, script: Script, keys: Sequence[str], args: Sequence[Arg]
) -> Any:
    """Run a script by SHA; on NOSCRIPT send the source once (EVAL caches it)."""
    try:
        return await redis.evalsha(script.sha, keys, args)
    except NoScriptError:
        return await redis.execute("EVAL", script.source, len(keys), *keys, *args)


def pairs_to_dict(flat: Sequence[Any] | None) -> dict[str, str]:
    """`[f1, v1, f2, v2]` → `{f1: v1, f2: v2}` (HGETALL and stream fields in RESP2)."""
    if not flat:
        return {}
    items = list(flat)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def parse_xread(reply: Any) -> list[StreamEntry]:
    """A one-stream XREAD reply (RESP2 shape) → `[(id, fields)]`."""
    return [entry for _, entry in parse_xread_streams(reply)]


def parse_xread_streams(reply: Any) -> list[KeyedEntry]:
    """An XREAD reply (RESP2 shape, any number of streams) → `[(key, (id, fields))]`."""
    if not reply:
        return []
    return [
        (str(key), (str(entry_id), pairs_to_dict(fields)))
        for key, entries in reply
        for entry_id, fields in entries
    ]


def xread_command(
    streams: Sequence[tuple[str, str]], count: int, block_ms: int | None
) -> list[Arg]:
    """`XREAD COUNT n [BLOCK ms] STREAMS k1 k2 … id1 id2 …`."""
    command: list[Arg] = ["XREAD", "COUNT", count]
    if block_ms is not None:
        command += ["BLOCK", block_ms]
    command.append("STREAMS")
    command += [key for key, _ in streams]
    command += [after for _, after in streams]
    return command
