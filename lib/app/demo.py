"""`make demo`: one job_match through the whole local stack, its tokens printed as they stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from lib.settings import Settings, secret

logger = logging.getLogger("slotline.demo")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The offline model answers instantly; pace it so the stream is visible.
DEMO_TOKENS_PER_S = 250.0
DEMO_TTFT_MS = 150.0
MAX_RECONNECTS = 20


class DemoError(Exception):
    """The demo could not complete; the message says where it stopped."""


@dataclass
class SseEvent:
    """One parsed server-sent event."""

    type: str
    id: str | None
    data: Any


@dataclass
class Outcome:
    """What the event stream delivered."""

    last_id: str | None = None
    result: Any = None
    done: dict[str, Any] = field(default_factory=dict)
    tokens: int = 0


def example(name: str) -> str:
    """The text of `examples/<name>` (the repository's sample files)."""
    path = EXAMPLES / name
    if not path.is_file():  # installed without the repository around it
        path = Path(str(resources.files("lib"))).parent / "examples" / name
    return path.read_text(encoding="utf-8")


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse an SSE body incrementally: one event per blank-line-terminated block."""
    kind: str = "message"
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                raw = "\n".join(data)
                try:
                    decoded: Any = json.loads(raw)
                except ValueError:
                    decoded = raw
                yield SseEvent(kind, event_id, decoded)
            kind, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue  # heartbeat comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def follow(client: httpx.AsyncClient, events_url: str, headers: dict[str, str]) -> Outcome:
    """Read the task's SSE stream to its end, printing tokens; reconnect with Last-Event-ID.

    Raises:
        DemoError: the task failed or was cancelled, or the stream never ended.
    """
    outcome = Outcome()
    for _ in range(MAX_RECONNECTS):
        request_headers = {**headers, "Accept": "text/event-stream"}
        if outcome.last_id:
            request_headers["Last-Event-ID"] = outcome.last_id
        try:
            done = await _read_once(client, events_url, request_headers, outcome)
        except httpx.TransportError as exc:
            # A cut stream is resumed from the last event id, like any SSE client would.
            logger.warning("event stream cut (%s); resuming", type(exc).__name__)
            continue
        if done:
            return outcome
    raise DemoError(f"the event stream did not end after {MAX_RECONNECTS} connections")


async def _read_once(
    client: httpx.AsyncClient, events_url: str, headers: dict[str, str], outcome: Outcome
) -> bool:
    """One SSE connection; True once the terminal event arrived."""
    async with client.stream("GET", events_url, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise DemoError(f"events: HTTP {response.status_code} {response.text}")
        async for event in sse_events(response):
            outcome.last_id = event.id or outcome.last_id
            if event.type == "token":
                outcome.tokens += 1
                _write(str(event.data.get("text", "")))
            elif event.type == "started":
                _write(f"[started on {event.data.get('model')}]\n")
            elif event.type == "restart":
                _write("\n[restarted: a new attempt streams from the start]\n")
            elif event.type == "result":
                outcome.result = event.data
            elif event.type == "done":
                outcome.done = event.data if isinstance(event.data, dict) else {}
                _write("\n")
                return True
            elif event.type == "error":
                raise DemoError(f"task failed: {event.data}")
            elif event.type == "cancelled":
                raise DemoError("task was cancelled")
    return False


def _model_label(done: dict[str, Any], status: dict[str, Any], settings: Settings) -> str:
    from lib.app.doctor import model_providers

    label = str(done.get("model") or status.get("model_id") or "?")
    model_id = status.get("model_id")
    served = model_providers(settings).get(model_id)  # type: ignore[arg-type]
    if served == "offline" and "offline" not in label.lower():
        label += " (offline model)"
    return label


def _usage_line(usage: dict[str, Any]) -> str:
    inp, out = usage.get("input_tokens"), usage.get("output_tokens")
    return f"{inp} input + {out} output tokens"


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start the stack, submit one job_match, stream it, print the summary.

    Raises:
        DemoError: any step failed.
    """
    from lib.app.stack import LocalStack, check_health

    resume = example(f"resume.{args.lang}.txt")
    job = example(f"job.{args.lang}.txt")
    started = time.monotonic()
    stack = LocalStack(
        settings,
        state_dir=Path(settings.state_dir) / "demo",
        redis_mode=args.redis,
        write_stack_file=False,
    )
    try:
        info = stack.start()
        check_health(info)
        _write(f"local stack up in {time.monotonic() - started:.1f}s: app={info.app_url}\n")
        headers: dict[str, str] = {}
        if args.user:
            headers["Authorization"] = f"Bearer {await _sign_in(info.settings, args)}"
        async with httpx.AsyncClient(base_url=info.app_url, timeout=30.0) as client:
            body = {
                "template": "job_match",
                "variables": {"resume_text": resume, "job_text": job},
                "lang": args.lang,
            }
            reply = await client.post("/api/tasks", json=body, headers=headers)
            if reply.status_code != 202:
                raise DemoError(f"submit: HTTP {reply.status_code} {reply.text}")
            task = reply.json()
            _write(
                f"submitted job_match {task['task_id']}: tier={task['tier']} "
                f"queue={task['queue_id']} model={task['model_id']} position={task['position']}\n"
                "--- streaming ---\n"
            )
            outcome = await follow(client, task["events_url"], headers)
            status_reply = await client.get(task["status_url"], headers=headers)
            if status_reply.status_code != 200:
                raise DemoError(f"status: HTTP {status_reply.status_code} {status_reply.text}")
            status = status_reply.json()
        _summary(status, outcome, info.settings, time.monotonic() - started)
        if status.get("status") != "done":
            raise DemoError(f"task ended as {status.get('status')}")
        return 0
    finally:
        stack.stop()


async def _sign_in(settings: Settings, args: argparse.Namespace) -> str:
    """A bearer token for `--user`, after granting it `--grant` units (paid tier)."""
    from lib.auth import issue_token
    from lib.redis.factory import create_redis
    from lib.tasks import quota

    token = issue_token(secret(settings.app_secret) or "", args.user, 3600)
    if args.grant > 0:
        redis = create_redis(settings)
        try:
            balance = await quota.grant(redis, args.user, args.grant)
        finally:
            await redis.aclose()
        _write(f"signed in as {args.user}; balance now {balance}\n")
    return token


def _summary(status: dict[str, Any], outcome: Outcome, settings: Settings, took: float) -> None:
    done = outcome.done
    usage = done.get("usage") or {}
    result = outcome.result if isinstance(outcome.result, dict) else {}
    rows = [
        ("status", str(status.get("status"))),
        ("tier", f"{status.get('tier')} ({status.get('queue_id')})"),
        ("queue wait", f"{status.get('wait_ms')} ms"),
        ("model", _model_label(done, status, settings)),
        ("usage", _usage_line(usage)),
        ("cost", f"{done.get('cost')} {done.get('currency', '')}".strip()),
        ("latency", f"{done.get('latency_ms')} ms (token events: {outcome.tokens})"),
    ]
    if isinstance(result.get("match_score"), int | float):
        rows.append(("match score", f"{result['match_score']:g}/100"))
    rows.append(("total", f"{took:.1f}s"))
    _write("--- summary ---\n" + "".join(f"{k:<12} {v}\n" for k, v in rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 on success, 1 with a message on stderr on any failure."""
    parser = argparse.ArgumentParser(prog="python -m lib.app.demo", description=__doc__)
    parser.add_argument("--lang", choices=["en", "zh"], default="en")
    parser.add_argument("--redis", choices=["tcp", "rest"], default="tcp")
    parser.add_argument("--user", help="submit as this signed-in user instead of a trial visitor")
    parser.add_argument("--grant", type=int, default=1, help="quota granted to --user first")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    # pgserver warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings()
    if settings.offline_tokens_per_s == 0 and settings.offline_ttft_ms == 0:
        settings = settings.model_copy(
            update={"offline_tokens_per_s": DEMO_TOKENS_PER_S, "offline_ttft_ms": DEMO_TTFT_MS}
        )
    try:
        return asyncio.run(run_demo(settings, args))
    except DemoError as exc:
        sys.stderr.write(f"\ndemo failed: {exc}\n")
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        sys.stderr.write(f"\ndemo failed: {type(exc).__name__}: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("\ndemo interrupted\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
