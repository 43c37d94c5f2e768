"""`make demo`: the product's main job on the local stack, from the uploads to the last step.

Uploads the example résumé as a PDF (made at run time from `examples/`), the detailed
résumé and the job description (`--lang zh`: a screenshot of it, which the vision route
reads), creates a depth-c service and follows its one event stream: the three summaries
running in parallel, the job match streamed token by token, the customized résumé and
the interview preparation; then the service's status, tier, cost and usage by step.
It prints the workbench's and the queue dashboard's URLs; `--keep` leaves the stack up
afterwards for a browser. Its labels are in `--lang` (`demo_view.py`, `demo_report.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import signal
import sys
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from lib.app.demo_report import page_urls, report
from lib.app.demo_view import LATER, Follower, SseEvent, Texts, cells, ljust, write
from lib.local import example_files
from lib.settings import Settings, secret

logger = logging.getLogger("slotline.demo")

# The offline model answers instantly; pace it so the stream is visible.
DEMO_TOKENS_PER_S = 250.0
DEMO_TTFT_MS = 150.0
# The free pool of glm-4.5-flash has 2 slots: with 3 the three summaries of a trial
# visitor run at once, as a paid user's do (DeepSeek's pool has 5). A configured
# GLM_FLASH_MAX_WORKERS wins.
DEMO_FLASH_SLOTS = 3
# Each run is a new trial visitor from 127.0.0.1, on the Valkey of the last run: the
# per-address window (3 services in RATE_WINDOW_S) would refuse the fourth run in a row.
# A configured RATE_TRIAL_ADDRESS_LIMIT wins.
DEMO_TRIAL_ADDRESS_LIMIT = 0
MAX_RECONNECTS = 20


class DemoError(Exception):
    """The demo could not complete; the message says where it stopped."""


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


async def follow(
    client: httpx.AsyncClient, events_url: str, headers: dict[str, str], follower: Follower
) -> None:
    """Read the service's SSE stream to its end; reconnect with Last-Event-ID.

    Raises:
        DemoError: the stream did not end after `MAX_RECONNECTS` connections.
    """
    t = follower.t
    for _ in range(MAX_RECONNECTS):
        request_headers = {**headers, "Accept": "text/event-stream"}
        if follower.last_id:
            request_headers["Last-Event-ID"] = follower.last_id
        try:
            async with client.stream("GET", events_url, headers=request_headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise DemoError(_http_error(t, response, t("error.events")))
                async for event in sse_events(response):
                    if follower.handle(event):
                        return
        except httpx.TransportError as exc:
            # A cut stream is resumed from the last event id, like any SSE client would.
            logger.warning("event stream cut (%s); resuming", type(exc).__name__)
    raise DemoError(t("error.stream_did_not_end", n=MAX_RECONNECTS))


def _http_error(t: Texts, reply: httpx.Response, what: str) -> str:
    """What failed, its status and the API's message (localized by the server)."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    said = body.get("message") if isinstance(body, dict) else None
    return t("error.http", what=what, status=reply.status_code, message=said or reply.text)


def api_headers(lang: str) -> dict[str, str]:
    """The demo's request headers: its language, so the API's errors come back in it too."""
    return {"Accept-Language": lang}


def answer(t: Texts, reply: httpx.Response, what: str, expected: int) -> dict[str, Any]:
    """The reply's JSON body when its status is `expected`.

    Raises:
        DemoError: another status; the message has the API's (localized) message.
    """
    if reply.status_code != expected:
        raise DemoError(_http_error(t, reply, what))
    body: dict[str, Any] = reply.json()
    return body


async def upload(client: httpx.AsyncClient, t: Texts, headers: dict[str, str]) -> dict[str, str]:
    """Upload the three inputs as a user would; print what each became.

    Returns:
        The create body's asset ids.
    """
    lang = t.lang
    resume = example_files.resume_pdf(lang)
    origin = f"examples/resume.{lang}.txt"
    uploads: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            "resume",
            "resume",
            t(
                "upload.resume_pdf",
                file=f"resume.{lang}.pdf",
                origin=origin,
                bytes=f"{len(resume):,}",
            ),
            {"files": {"file": (f"resume.{lang}.pdf", resume, "application/pdf")}},
        ),
        (
            "detailed-resume",
            "detailed_resume",
            t("upload.text_of", origin="examples/detailed_resume.en.txt")
            if lang == "en"
            else t("upload.text_with_projects", origin=origin),
            {"json": {"text": example_files.detailed_resume(lang), "lang": lang}},
        ),
    ]
    if lang == "en":
        uploads.append(
            (
                "jd",
                "jd",
                t("upload.text_of", origin="examples/job.en.txt"),
                {"json": {"text": example_files.example("job.en.txt"), "lang": lang}},
            )
        )
    else:
        png = example_files.job_screenshot_png(lang)
        shot = t(
            "upload.screenshot",
            file=f"job.{lang}.png",
            origin=f"examples/job.{lang}.txt",
            bytes=f"{len(png):,}",
        )
        uploads.append(
            ("jd", "jd", shot, {"files": {"file": (f"job.{lang}.png", png, "image/png")}})
        )
    label_w = max(cells(t(f"input.{name}")) for _, name, _, _ in uploads) + 1
    ids: dict[str, str] = {}
    for route, name, source, body in uploads:
        if "files" in body:
            body = {**body, "data": {"lang": lang}}
        reply = await client.post(f"/api/upload/{route}", headers=headers, **body)
        stored = answer(t, reply, t("error.upload", input=t(f"input.{name}")), 201)
        key = next(k for k in ("resume_id", "detailed_resume_id", "job_id") if k in stored)
        ids[key] = str(stored[key])
        kind = str(stored.get("source"))
        if kind == "image":
            read = t("upload.read_image")
        else:
            shown = t(f"source.{kind}") if kind in ("text", "pdf", "docx") else kind
            read = t("upload.read_text", source=shown, chars=stored.get("chars"))
        label = ljust(t(f"input.{name}"), label_w)
        write(
            t("upload.line", label=label, source=source)
            + "\n"
            + t("upload.stored", key=key, id=ids[key][:8], read=read, lang=stored.get("lang"))
            + "\n"
        )
    return ids


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start the stack, upload, create the service, follow it, print the report.

    With `--keep` the stack stays up after the service ended, until SIGINT or SIGTERM.

    Raises:
        DemoError: any step failed, or the service did not end `done`.
    """
    from lib.app.stack import LocalStack, check_health

    t = Texts(args.lang)
    started = time.monotonic()
    state_dir = Path(settings.state_dir) / "demo"
    stack = LocalStack(settings, state_dir=state_dir, redis_mode=args.redis, write_stack_file=False)
    try:
        info = stack.start()
        check_health(info)
        write(t("stack_up", seconds=f"{time.monotonic() - started:.1f}", url=info.app_url) + "\n")
        operators = info.settings.operators
        write(page_urls(t, info.app_url, user=args.user, operators=operators))
        headers = api_headers(args.lang)
        if args.user:
            headers["Authorization"] = f"Bearer {await _sign_in(info.settings, args, t)}"
        else:
            write(t("trial", option="--user NAME") + "\n")
        async with httpx.AsyncClient(base_url=info.app_url, timeout=60.0) as client:
            ids = await upload(client, t, headers)
            body = {**ids, "lang": args.lang, "depth": args.depth}
            reply = await client.post("/api/service/create", json=body, headers=headers)
            created = answer(t, reply, t("error.create"), 202)
            service_id = str(created["service_id"])
            write(
                t(
                    "created",
                    id=service_id,
                    depth=created["depth"],
                    tier=t.tier(created["tier"]),
                    lang=created["lang"],
                )
                + "\n"
            )
            follower = Follower(LATER[: {"a": 1, "b": 2, "c": 3}[args.depth]], args.lang)
            await follow(client, created["events_url"], headers, follower)
            reply = await client.get(created["status_url"], headers=headers)
            status = answer(t, reply, t("error.status"), 200)
            tasks = await _tasks(client, status, headers)
        report(status, tasks, follower, time.monotonic() - started)
        if args.keep:
            urls = page_urls(
                t, info.app_url, user=args.user, operators=operators, service_id=service_id
            )
            await _keep(t, urls, args.user, state_dir, settings)
        if status.get("status") != "done":
            raise DemoError(
                t(
                    "error.service_ended",
                    status=t.status(str(status.get("status"))),
                    error=t.error(status.get("error")),
                )
            )
        return 0
    finally:
        stack.stop()


def token_command(user: str, state_dir: Path, settings: Settings) -> str:
    """The shell command that prints a bearer token the demo's stack accepts for `user`.

    The stack signs with `APP_SECRET`, else with the secret it generated in its own state
    folder (`state_dir`), which `slotline token` reads when pointed there.
    """
    slotline = Path(sys.executable).with_name("slotline")
    program = shlex.quote(str(slotline)) if slotline.exists() else "slotline"
    command = f"{program} token {shlex.quote(user)}"
    if secret(settings.app_secret):
        return command
    return f"STATE_DIR={shlex.quote(str(state_dir))} {command}"


async def _keep(t: Texts, urls: str, user: str | None, state_dir: Path, settings: Settings) -> None:
    """`--keep`: the URLs again and how to see the service there; wait for SIGINT/SIGTERM."""
    write("--- " + t("keep.running", option="--keep", keys="Ctrl-C") + " ---\n" + urls)
    if user is None:
        write(t("keep.trial", option="--user NAME") + "\n")
    else:
        command = token_command(user, state_dir, settings)
        write(t("keep.signin", user=user, command=command) + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    write("\n" + t("keep.stopping") + "\n")


async def _tasks(
    client: httpx.AsyncClient, status: dict[str, Any], headers: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Each step's task as `GET /api/tasks/{id}` has it (its queue, times and usage)."""
    out: dict[str, dict[str, Any]] = {}
    for step in status.get("steps") or []:
        if step.get("task_id"):
            reply = await client.get(f"/api/tasks/{step['task_id']}", headers=headers)
            if reply.status_code == 200:
                out[step["step"]] = reply.json()
    return out


async def _sign_in(settings: Settings, args: argparse.Namespace, t: Texts) -> str:
    """A bearer token for `--user`, after granting it `--grant` units (paid tier)."""
    from lib.auth import issue_token
    from lib.redis.factory import create_redis
    from lib.tasks import quota

    token = issue_token(secret(settings.app_secret) or "", args.user, 3600)
    cost = settings.service_costs.get(args.depth, 0)
    grant = args.grant if args.grant is not None else cost
    if grant > 0:
        redis = create_redis(settings)
        try:
            balance = await quota.grant(redis, args.user, grant)
        finally:
            await redis.aclose()
        params = {"grant": grant, "balance": balance, "depth": args.depth, "cost": cost}
        write(t("signed_in_granted", user=args.user, **params) + "\n")
    else:
        write(t("signed_in", user=args.user) + "\n")
    return token


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the service ends done, 1 with a message on stderr otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m lib.app.demo",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--lang", choices=["en", "zh"], default="en")
    parser.add_argument("--depth", choices=["a", "b", "c"], default="c")
    parser.add_argument("--redis", choices=["tcp", "rest"], default="tcp")
    parser.add_argument("--user", help="run as this signed-in user instead of a trial visitor")
    parser.add_argument(
        "--grant", type=int, help="quota granted to --user first (default: the depth's cost)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack running after the service ended (Ctrl-C stops it)",
    )
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
    update: dict[str, Any] = {}
    if settings.offline_tokens_per_s == 0 and settings.offline_ttft_ms == 0:
        update.update(offline_tokens_per_s=DEMO_TOKENS_PER_S, offline_ttft_ms=DEMO_TTFT_MS)
    if "glm_flash_max_workers" not in settings.model_fields_set:
        update["glm_flash_max_workers"] = max(settings.glm_flash_max_workers, DEMO_FLASH_SLOTS)
    if "rate_trial_address_limit" not in settings.model_fields_set:
        update["rate_trial_address_limit"] = DEMO_TRIAL_ADDRESS_LIMIT
    settings = settings.model_copy(update=update)
    t = Texts(args.lang)
    try:
        return asyncio.run(run_demo(settings, args))
    except DemoError as exc:
        sys.stderr.write("\n" + t("error.failed", reason=exc) + "\n")
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        sys.stderr.write("\n" + t("error.unexpected", kind=type(exc).__name__, detail=exc) + "\n")
    except KeyboardInterrupt:
        sys.stderr.write("\n" + t("error.interrupted") + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
