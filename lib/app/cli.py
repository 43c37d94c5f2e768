"""The `slotline` command: dev, doctor, token, quota grant/balance, migrate, usage."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from lib.settings import Settings, secret

logger = logging.getLogger("slotline")

DEFAULT_DEV_PORT = 8000
DEFAULT_TOKEN_TTL_S = 86_400


class CliError(Exception):
    """A failure the user can act on: printed as one line on stderr, exit status 1."""


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _stack_file(settings: Settings) -> dict[str, Any] | None:
    from lib.app.stack import read_stack_file

    return read_stack_file(Path(settings.state_dir))


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """Run the local stack until Ctrl-C or SIGTERM; print one `ready` line once all answer."""
    from lib.app.stack import LocalStack, check_health

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(
        settings,
        port=args.port,
        redis_mode=args.redis,
        state_dir=Path(settings.state_dir),
        time_scale=settings.qstash_time_scale,
    )
    try:
        try:
            info = stack.start()
            check_health(info)
        except RuntimeError as exc:
            raise CliError(str(exc)) from exc
        if not stopping.is_set():
            _out(f"ready app={info.app_url} qstash={info.qstash_url}")
        stopping.wait()
        logger.info("stopping the local stack")
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Print each part's mode and every missing setting; exit 1 when a setting contradicts."""
    from lib.app.doctor import diagnose, render

    parts = diagnose(settings)
    _out(render(parts, stack=_stack_file(settings)))
    return 1 if any(part.problems for part in parts) else 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Print a bearer token for USER signed with APP_SECRET (or the local stack's secret)."""
    from lib.auth import app_secret, issue_token

    if args.ttl <= 0:
        raise CliError("--ttl must be a positive number of seconds")
    try:
        token = issue_token(app_secret(settings), args.user, args.ttl)
    except ValueError as exc:
        raise CliError(f"{exc}: use letters, digits and _.@+- (not starting with trial-)") from exc
    _out(token)  # the one intended secret on stdout: the caller asked for it
    return 0


def _redis_url_or_port(settings: Settings) -> Any:
    """The Redis the settings name, else the running local stack's embedded Valkey."""
    from lib.redis.factory import create_redis

    if settings.redis_mode() != "embedded":
        return create_redis(settings)
    stack = _stack_file(settings)
    if stack is None or not stack.get("redis_url"):
        raise CliError(
            "no Redis: set REDIS_URL (or UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN), "
            f"or start `slotline dev` (state folder {settings.state_dir})"
        )
    return create_redis(settings.model_copy(update={"redis_url": stack["redis_url"]}))


async def _quota(settings: Settings, user: str, amount: int | None) -> int:
    from lib.errors import RedisUnavailable
    from lib.redis.port import RedisReplyError
    from lib.tasks import quota

    redis = _redis_url_or_port(settings)
    try:
        if amount is None:
            return await quota.balance(redis, user)
        return await quota.grant(redis, user, amount)
    except (RedisReplyError, RedisUnavailable) as exc:
        raise CliError(f"Redis refused or is unreachable: {type(exc).__name__}: {exc}") from exc
    finally:
        await redis.aclose()


def cmd_quota(args: argparse.Namespace, settings: Settings) -> int:
    """`quota grant USER AMOUNT` / `quota balance USER`: print the (new) balance."""
    import asyncio

    from lib.auth import valid_user_id

    if not valid_user_id(args.user):
        raise CliError(f"invalid user id {args.user!r}")
    amount: int | None = None
    if args.quota_command == "grant":
        if args.amount <= 0:
            raise CliError("AMOUNT must be a positive whole number")
        amount = args.amount
    _out(str(asyncio.run(_quota(settings, args.user, amount))))
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply migrations to DATABASE_URL, or to the running local stack's Postgres."""
    import asyncio

    import psycopg

    from lib.db.migrate import migrate

    url = _database_url(settings)
    try:
        applied = asyncio.run(migrate(url))
    except psycopg.Error as exc:
        raise CliError(f"migration failed: {type(exc).__name__}: {exc}") from exc
    _out(f"applied {', '.join(applied)}" if applied else "up to date")
    return 0


def _database_url(settings: Settings) -> str:
    """DATABASE_URL, or the running local stack's Postgres."""
    url = secret(settings.database_url)
    if not url:
        stack = _stack_file(settings)
        url = stack.get("database_url") if stack else None
    if not url:
        raise CliError("no database: set DATABASE_URL or start `slotline dev`")
    return str(url)


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    """Operator summary: calls, success rate, tokens, cost and latency per model."""
    import asyncio

    from lib.usage.store import usage_summary

    rows = asyncio.run(usage_summary(_database_url(settings), args.days))
    header = f"{'provider':<14}{'model_id':<26}{'calls':>7}{'ok %':>7}{'degraded':>9}"
    _out(f"{header}{'tokens':>10}{'cost':>12}{'p50 ms':>9}{'p95 ms':>9}")
    for r in rows:
        _out(
            f"{r.provider:<14}{r.model_id:<26}{r.calls:>7}{r.success_rate * 100:>7.1f}"
            f"{r.degraded:>9}{r.total_tokens:>10}{float(r.cost):>8.4f} {r.currency:<3}"
            f"{r.p50_latency_ms:>9.0f}{r.p95_latency_ms:>9.0f}"
        )
    if not rows:
        _out(f"no LLM calls in the last {args.days} days")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="slotline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO on stderr")
    parser.add_argument("--state-dir", type=Path, help="local stack state folder (.slotline)")
    # The same options after the subcommand (`slotline dev --state-dir X`); SUPPRESS keeps a
    # subcommand that does not repeat them from resetting what came before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO"
    )
    common.add_argument(
        "--state-dir", type=Path, default=argparse.SUPPRESS, help="local stack state folder"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    dev = add("dev", help="run the whole stack locally on loopback")
    dev.add_argument("--port", type=int, default=DEFAULT_DEV_PORT, help="the app's port")
    dev.add_argument("--redis", choices=["tcp", "rest"], default="tcp", help="Redis adapter")
    dev.set_defaults(func=cmd_dev)

    doctor = add("doctor", help="show modes and missing settings")
    doctor.set_defaults(func=cmd_doctor)

    token = add("token", help="print a bearer token for USER")
    token.add_argument("user")
    token.add_argument("--ttl", type=int, default=DEFAULT_TOKEN_TTL_S, help="seconds")
    token.set_defaults(func=cmd_token)

    quota = add("quota", help="user balances")
    quota_sub = quota.add_subparsers(dest="quota_command", required=True)
    grant = quota_sub.add_parser("grant", parents=[common], help="add AMOUNT to USER's balance")
    grant.add_argument("user")
    grant.add_argument("amount", type=int)
    grant.set_defaults(func=cmd_quota)
    balance = quota_sub.add_parser("balance", parents=[common], help="print USER's balance")
    balance.add_argument("user")
    balance.set_defaults(func=cmd_quota)

    migrate = add("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    usage = add("usage", help="operator summary of LLM calls per model")
    usage.add_argument("--days", type=int, default=7, help="period in days")
    usage.set_defaults(func=cmd_usage)
    return parser


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    """Run one subcommand.

    Args:
        argv: the arguments (default `sys.argv[1:]`).
        settings: the settings to use (default: read from the environment and `.env`).

    Returns:
        The exit status: 0 on success, 1 on a reported failure.
    """
    args = build_parser().parse_args(argv)
    # pgserver warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings or Settings()
    if args.state_dir is not None:
        settings = settings.model_copy(update={"state_dir": args.state_dir})
    try:
        status: int = args.func(args, settings)
    except CliError as exc:
        sys.stderr.write(f"slotline {args.command}: {exc}\n")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
