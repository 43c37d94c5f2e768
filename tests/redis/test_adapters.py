"""Both Redis adapters (TCP, REST) give identical replies; the local REST server speaks Upstash."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr
from upstash_redis.asyncio import Redis as UpstashRedis

from lib.errors import ConfigError, RedisUnavailable
from lib.local.embedded import free_port
from lib.local.upstash_rest import LocalRest
from lib.redis.factory import create_redis
from lib.redis.port import NoScriptError, RedisPort, RedisReplyError, Script, run_script
from lib.redis.rest import RestRedis
from lib.redis.tcp import TcpRedis
from lib.settings import Settings

LUA_DIR = Path(__file__).parent / "lua"
ZH = "简历摘要：熟悉分布式系统，擅长 Python。🚀"

# (setup commands, command, expected reply): one literal per case pins both adapters.
SHAPES: list[tuple[list[list[Any]], list[Any], Any]] = [
    ([], ["SET", "k", "v"], "OK"),
    ([["SET", "k", "v"]], ["GET", "k"], "v"),
    ([], ["GET", "missing"], None),
    ([["SET", "n", 41]], ["INCR", "n"], 42),
    ([], ["PING"], "PONG"),
    ([["SET", "k", "v"]], ["TYPE", "k"], "string"),
    ([["SET", "k", "v"]], ["EXPIRE", "k", 100], 1),
    ([["SET", "a", "1"]], ["MGET", "a", "missing"], ["1", None]),
    ([], ["HSET", "h", "f", "v", "g", 2], 2),
    ([["HSET", "h", "f", "v", "g", 2]], ["HGETALL", "h"], ["f", "v", "g", "2"]),
    ([], ["HGETALL", "missing"], []),
    (
        [["ZADD", "z", 1, "a", 2.5, "b"]],
        ["ZRANGE", "z", 0, -1, "WITHSCORES"],
        ["a", "1", "b", "2.5"],
    ),
    ([["ZADD", "z", 2.5, "b"]], ["ZSCORE", "z", "b"], "2.5"),
    ([], ["XADD", "s", "5-1", "type", "token"], "5-1"),
    (
        [["XADD", "s", "5-1", "type", "token", "data", "x"]],
        ["XRANGE", "s", "-", "+"],
        [["5-1", ["type", "token", "data", "x"]]],
    ),
    (
        [["XADD", "s", "5-1", "f", "v"]],
        ["XREAD", "COUNT", 5, "STREAMS", "s", "0-0"],
        [["s", [["5-1", ["f", "v"]]]]],
    ),
    ([], ["XREAD", "STREAMS", "missing", "0-0"], None),
    ([], ["EVAL", "return {1, 'a', {2, 'b', false}}", 0], [1, "a", [2, "b", None]]),
]


def _test_script() -> Script:
    return Script("hset_echo", (LUA_DIR / "hset_echo.lua").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("setup", "command", "expected"),
    SHAPES,
    ids=[f"{i:02d}-{' '.join(str(a) for a in case[1][:2])}" for i, case in enumerate(SHAPES)],
)
async def test_reply_shapes(
    redis: RedisPort, setup: list[list[Any]], command: list[Any], expected: Any
) -> None:
    """Every adapter returns raw RESP2 shapes: str, int, None, flat lists, nested lists."""
    for step in setup:
        await redis.execute(*step)
    assert await redis.execute(*command) == expected


async def test_run_script_falls_back_to_eval_then_runs_by_sha(redis: RedisPort) -> None:
    """After SCRIPT FLUSH, EVALSHA raises NoScriptError; run_script EVALs once, then SHA works."""
    script = _test_script()
    with pytest.raises(NoScriptError):
        await redis.evalsha(script.sha, ["h"], ["f", "v"])
    assert await run_script(redis, script, ["h"], ["f", "v"]) == [1, ["f", "v"], "done"]
    assert await redis.execute("SCRIPT", "EXISTS", script.sha) == [1]
    assert await redis.evalsha(script.sha, ["h"], ["g", 7]) == [1, ["f", "v", "g", "7"], "done"]


@pytest.mark.parametrize(
    ("setup", "command", "fragment"),
    [
        ([["SET", "k", "v"]], ["HGET", "k", "f"], "WRONGTYPE"),
        ([["SET", "k", "v"]], ["INCR", "k"], "not an integer"),
        ([], ["NOSUCHCOMMAND", "x"], "unknown command"),
        ([], ["EVAL", "return redis.error_reply('MYERR boom')", 0], "MYERR boom"),
    ],
)
async def test_error_reply_raises_reply_error(
    redis: RedisPort, setup: list[list[Any]], command: list[Any], fragment: str
) -> None:
    """An error reply raises RedisReplyError carrying Redis's message."""
    for step in setup:
        await redis.execute(*step)
    with pytest.raises(RedisReplyError, match=fragment):
        await redis.execute(*command)


async def test_pipeline_returns_every_reply(redis: RedisPort) -> None:
    """A pipeline returns one reply per command, in order, in the same shapes as execute."""
    replies = await redis.pipeline(
        [["SET", "k", "v"], ["INCR", "n"], ["HSET", "h", "f", "v"], ["HGETALL", "h"], ["GET", "x"]]
    )
    assert replies == ["OK", 1, 1, ["f", "v"], None]
    assert await redis.pipeline([]) == []


async def test_pipeline_error_raises(redis: RedisPort) -> None:
    """A failing command in a pipeline raises RedisReplyError; the others still ran."""
    with pytest.raises(RedisReplyError):
        await redis.pipeline([["SET", "k", "v"], ["INCR", "k"], ["SET", "after", "1"]])
    assert await redis.execute("GET", "after") == "1"


async def test_xread_returns_available_entries(redis: RedisPort) -> None:
    """Without block_ms, xread returns up to `count` entries after the id, at once."""
    for i in range(1, 4):
        await redis.execute("XADD", "s", f"{i}-0", "i", i)
    assert await redis.xread("s", "1-0", count=1, block_ms=None) == [("2-0", {"i": "2"})]
    assert await redis.xread("s", "3-0", count=10, block_ms=None) == []


async def test_xread_block_returns_entries_written_while_waiting(redis: RedisPort) -> None:
    """A blocking xread (REST: polling) returns an entry another task writes meanwhile."""

    async def write_later() -> None:
        await asyncio.sleep(0.2)
        await redis.execute("XADD", "s", "7-0", "type", "token")

    started = time.monotonic()
    writer = asyncio.create_task(write_later())
    entries = await redis.xread("s", "0-0", count=10, block_ms=5000)
    elapsed = time.monotonic() - started
    await writer
    assert entries == [("7-0", {"type": "token"})]
    assert 0.15 <= elapsed < 2.0  # woken by the write at 0.2 s, not the 5 s block; room for load


async def test_xread_block_dollar_waits_for_new_entries(redis: RedisPort) -> None:
    """`$` skips entries that existed before the call and returns the next one."""
    await redis.execute("XADD", "s", "1-0", "old", "x")

    async def write_later() -> None:
        await asyncio.sleep(0.2)
        await redis.execute("XADD", "s", "2-0", "new", "y")

    writer = asyncio.create_task(write_later())
    entries = await redis.xread("s", "$", count=10, block_ms=5000)
    await writer
    assert entries == [("2-0", {"new": "y"})]


async def test_xread_block_times_out_empty(redis: RedisPort) -> None:
    """A blocking xread with nothing to read returns [] once block_ms has passed."""
    await redis.execute("XADD", "s", "1-0", "f", "v")
    started = time.monotonic()
    assert await redis.xread("s", "1-0", count=10, block_ms=300) == []
    # Never early (10 ms for the server's clock), and 1.7 s of room for load after it.
    assert 0.29 <= time.monotonic() - started < 2.0


async def test_utf8_round_trip(redis: RedisPort) -> None:
    """Chinese text and emoji survive strings, hashes, streams and Lua unchanged."""
    await redis.execute("SET", "k", ZH)
    await redis.execute("HSET", "h", "摘要", ZH)
    await redis.execute("XADD", "s", "1-0", "data", ZH)
    assert await redis.execute("GET", "k") == ZH
    assert await redis.execute("HGETALL", "h") == ["摘要", ZH]
    assert await redis.xread("s", "0-0", count=1, block_ms=None) == [("1-0", {"data": ZH})]
    assert await redis.execute("EVAL", "return ARGV[1]", 0, ZH) == ZH
    assert await redis.execute("STRLEN", "k") == len(ZH.encode())


# --- the local Upstash REST server itself -------------------------------------------------


@pytest.fixture
async def http(local_rest: LocalRest, tcp_redis: TcpRedis) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client on the local REST server (database flushed by tcp_redis)."""
    headers = {"Authorization": f"Bearer {local_rest.token}"}
    async with httpx.AsyncClient(base_url=local_rest.url, headers=headers, timeout=10) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic abc"])
async def test_rest_requires_the_token(local_rest: LocalRest, authorization: str | None) -> None:
    """Requests without the right bearer token get 401 and run nothing."""
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=local_rest.url, headers=headers) as client:
        for path, body in [("/", ["PING"]), ("/pipeline", [["PING"]]), ("/multi-exec", [["PING"]])]:
            response = await client.post(path, json=body)
            assert response.status_code == 401
            assert response.json() == {"error": "Unauthorized"}


async def test_rest_base64_encodes_nested_strings_except_ok(http: httpx.AsyncClient) -> None:
    """With Upstash-Encoding: base64 every string is base64, nested too, except "OK"."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    headers = {"Upstash-Encoding": "base64"}
    set_reply = await http.post("/", json=["SET", "k", ZH], headers=headers)
    assert set_reply.json() == {"result": "OK"}
    await http.post("/", json=["XADD", "s", "1-0", "f", "OK"])
    xrange = await http.post("/", json=["XRANGE", "s", "-", "+"], headers=headers)
    assert xrange.json() == {"result": [[b64("1-0"), [b64("f"), "OK"]]]}
    mixed = await http.post(
        "/", json=["EVAL", "return {1, ARGV[1], {ARGV[1]}, false}", 0, ZH], headers=headers
    )
    assert mixed.json() == {"result": [1, b64(ZH), [b64(ZH)], None]}


async def test_rest_plain_strings_without_encoding_header(http: httpx.AsyncClient) -> None:
    """Without the encoding header strings come back as plain UTF-8 text."""
    await http.post("/", json=["HSET", "h", "f", ZH])
    response = await http.post("/", json=["HGETALL", "h"])
    assert response.json() == {"result": ["f", ZH]}


@pytest.mark.parametrize(
    "command",
    [
        ["BLPOP", "l", 1],
        ["BRPOP", "l", 1],
        ["BLMOVE", "a", "b", "LEFT", "RIGHT", 1],
        ["BZPOPMIN", "z", 1],
        ["XREAD", "COUNT", 1, "BLOCK", 100, "STREAMS", "s", "$"],
        ["xreadgroup", "GROUP", "g", "c", "BLOCK", 100, "STREAMS", "s", ">"],
        ["SUBSCRIBE", "chan"],
        ["MONITOR"],
        ["MULTI"],
    ],
)
async def test_rest_rejects_blocking_and_stateful_commands(
    http: httpx.AsyncClient, command: list[Any]
) -> None:
    """Blocking or connection-state commands answer 400 with an ERR error at once."""
    response = await http.post("/", json=command)
    assert response.status_code == 400
    assert response.json()["error"].startswith("ERR Command is not available")


async def test_rest_errors_keep_redis_prefix(http: httpx.AsyncClient) -> None:
    """Error replies are HTTP 400 with Redis's own prefix (NOSCRIPT, WRONGTYPE, ERR)."""
    await http.post("/", json=["SET", "k", "v"])
    expected = {
        "NOSCRIPT": ["EVALSHA", "0" * 40, 0],
        "WRONGTYPE": ["HGET", "k", "f"],
        "ERR": ["INCR", "k"],
    }
    for prefix, command in expected.items():
        response = await http.post("/", json=command)
        assert response.status_code == 400
        assert response.json()["error"].startswith(prefix + " ")


async def test_rest_multi_exec_is_all_or_nothing(http: httpx.AsyncClient) -> None:
    """A queueing error discards a whole multi-exec; /pipeline still runs the others."""
    commands = [["SET", "a", "1"], ["SET", "only-key"], ["SET", "b", "2"]]
    aborted = (await http.post("/multi-exec", json=commands)).json()
    assert [entry.get("error", "")[:9] for entry in aborted] == ["EXECABORT"] * 3
    assert (await http.post("/", json=["EXISTS", "a", "b"])).json() == {"result": 0}

    rejected = (await http.post("/multi-exec", json=[["SET", "a", "1"], ["BLPOP", "l", 1]])).json()
    assert rejected[0] == {"error": "EXECABORT Transaction discarded because of previous errors."}
    assert rejected[1]["error"].startswith("ERR Command is not available")
    assert (await http.post("/", json=["EXISTS", "a"])).json() == {"result": 0}

    piped = (await http.post("/pipeline", json=commands)).json()
    assert piped[0] == {"result": "OK"} and piped[2] == {"result": "OK"}
    assert piped[1]["error"].startswith("ERR wrong number of arguments")


async def test_rest_multi_exec_reports_each_reply(http: httpx.AsyncClient) -> None:
    """A committed multi-exec answers per command; a runtime error does not undo the rest."""
    body = [["SET", "k", "v"], ["INCR", "k"], ["INCR", "n"], ["GET", "k"]]
    entries = (await http.post("/multi-exec", json=body)).json()
    assert entries[0] == {"result": "OK"}
    assert entries[1]["error"].startswith("ERR value is not an integer")
    assert entries[2:] == [{"result": 1}, {"result": "v"}]


async def test_official_client_works_unchanged(local_rest: LocalRest, tcp_redis: TcpRedis) -> None:
    """The official upstash-redis client (base64, its own casts) works against the server."""
    client = UpstashRedis(local_rest.url, local_rest.token, rest_retries=0, allow_telemetry=False)
    try:
        assert cast(Any, await client.set("k", ZH)) is True
        assert await client.get("k") == ZH
        assert await client.hset("h", values={"f": "v", "中": "文"}) == 2
        assert await client.hgetall("h") == {"f": "v", "中": "文"}
        entry_id = await client.xadd("s", "*", {"type": "token", "data": ZH})
        assert cast(Any, await client.xrange("s")) == [[entry_id, ["type", "token", "data", ZH]]]
        assert await client.eval("return {KEYS[1], ARGV[1], 3}", ["k"], [ZH]) == ["k", ZH, 3]
        pipe = client.multi()
        pipe.incr("n")
        pipe.incr("n")
        assert await pipe.exec() == [1, 2]
    finally:
        await client.close()


async def test_rest_adapter_times_out_on_a_silent_server() -> None:
    """RestRedis gives up after its timeout (a command, a pipeline) instead of hanging."""

    release = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await release.wait()
        writer.close()
        await writer.wait_closed()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(silent(reader, writer)))

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = RestRedis(f"http://127.0.0.1:{port}", "t", timeout_s=0.2, retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await redis.execute("PING")
        assert isinstance(caught.value.__cause__, TimeoutError)
        with pytest.raises(RedisUnavailable):
            await redis.pipeline([["PING"], ["PING"]])
    finally:
        await redis.aclose()
        release.set()
        await asyncio.gather(*handlers)
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started < 2.5  # two 0.2 s timeouts, and 2.1 s of room for load


# --- the factory ----------------------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    blank: dict[str, Any] = {
        "redis_url": None,
        "upstash_redis_rest_url": None,
        "upstash_redis_rest_token": None,
    }
    return Settings(_env_file=None, **{**blank, **values})  # type: ignore[call-arg]


async def test_factory_prefers_tcp_then_rest(valkey_url: str) -> None:
    """REDIS_URL selects TCP (even with REST set); the REST URL and token select REST."""
    tcp = create_redis(
        _settings(
            redis_url=valkey_url,
            upstash_redis_rest_url="http://127.0.0.1:1",
            upstash_redis_rest_token=SecretStr("t"),
        )
    )
    rest = create_redis(
        _settings(
            upstash_redis_rest_url="http://127.0.0.1:1", upstash_redis_rest_token=SecretStr("t")
        )
    )
    try:
        assert (tcp.kind, rest.kind) == ("tcp", "rest")
        assert await tcp.execute("PING") == "PONG"
    finally:
        await tcp.aclose()
        await rest.aclose()


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({}, "no Redis configured"),
        ({"upstash_redis_rest_url": "http://127.0.0.1:1"}, "UPSTASH_REDIS_REST_TOKEN is missing"),
    ],
)
def test_factory_without_config_raises(values: dict[str, Any], fragment: str) -> None:
    """Missing Redis settings raise ConfigError saying what to set."""
    with pytest.raises(ConfigError, match=fragment):
        create_redis(_settings(**values))


@pytest.mark.parametrize("kind", ["tcp", "rest"])
async def test_unreachable_redis_is_redis_unavailable(kind: str) -> None:
    """Nothing listening: both adapters raise RedisUnavailable (a 503 for callers)."""
    port = free_port()
    redis: RedisPort
    if kind == "tcp":
        redis = TcpRedis.from_url(f"redis://127.0.0.1:{port}/0", pool_timeout_s=1.0)
    else:
        redis = RestRedis(f"http://127.0.0.1:{port}", "token", retries=0)
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await redis.execute("PING")
        assert caught.value.status == 503 and caught.value.code == "service_unavailable"
        with pytest.raises(RedisUnavailable):
            await redis.pipeline([["PING"], ["PING"]])
    finally:
        await redis.aclose()


async def test_tcp_pool_waits_for_a_connection_instead_of_failing(valkey_url: str) -> None:
    """With every blocking-read connection held, the next blocking read waits for one."""
    redis = TcpRedis.from_url(valkey_url, max_connections=1, pool_timeout_s=2.0)
    try:
        started = time.monotonic()
        blocked = asyncio.create_task(redis.xread("no-such-stream", "$", count=1, block_ms=300))
        await asyncio.sleep(0.05)
        assert await redis.xread("no-such-stream", "$", count=1, block_ms=1) == []
        assert time.monotonic() - started >= 0.25  # it waited for the first XREAD to end
        assert await blocked == []
    finally:
        await redis.aclose()


async def test_tcp_pool_gives_up_after_its_timeout(valkey_url: str) -> None:
    """No connection freed within the pool timeout: RedisUnavailable, not a hang."""
    redis = TcpRedis.from_url(valkey_url, max_connections=1, pool_timeout_s=0.1)
    try:
        blocked = asyncio.create_task(redis.xread("no-such-stream", "$", count=1, block_ms=600))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisUnavailable):
            await redis.xread("no-such-stream", "$", count=1, block_ms=1)
        assert await blocked == []
    finally:
        await redis.aclose()


async def test_tcp_blocking_readers_never_hold_up_commands(valkey_url: str) -> None:
    """Blocking reads have a pool of their own: with it full, commands still answer at once."""
    redis = TcpRedis.from_url(valkey_url, max_connections=2, pool_timeout_s=2.0)
    try:
        readers = [
            asyncio.create_task(redis.xread("no-such-stream", "$", count=1, block_ms=800))
            for _ in range(2)
        ]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await redis.pipeline([["PING"], ["PING"]]) == ["PONG", "PONG"]
        assert await redis.execute("PING") == "PONG"
        assert time.monotonic() - started < 0.5
        assert await asyncio.gather(*readers) == [[], []]
    finally:
        await redis.aclose()


async def test_one_read_takes_several_streams(redis: RedisPort) -> None:
    """xread_streams reads many streams after their own ids in one command, on both adapters."""
    a1 = await redis.execute("XADD", "s:a", "*", "n", "1")
    await redis.execute("XADD", "s:b", "*", "n", "2")
    await redis.execute("XADD", "s:a", "*", "n", "3")
    found = await redis.xread_streams([("s:a", a1), ("s:b", "0-0")], count=10, block_ms=None)
    assert [(key, fields["n"]) for key, (_, fields) in found] == [("s:a", "3"), ("s:b", "2")]
    assert await redis.xread_streams([("s:a", "$"), ("s:b", "$")], count=10, block_ms=50) == []
