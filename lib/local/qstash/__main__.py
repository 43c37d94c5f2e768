"""`python -m lib.local.qstash`: run the local QStash server alone."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from lib.local.qstash.app import create_app
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_QSTASH_TOKEN

logger = logging.getLogger("lib.local.qstash")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted (an embedded Valkey when no Redis is given)."""
    parser = argparse.ArgumentParser(prog="python -m lib.local.qstash", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--token", default=os.environ.get("QSTASH_TOKEN", DEV_QSTASH_TOKEN))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    valkey = None
    redis_url = args.redis_url
    if not redis_url:
        from lib.local.embedded import EmbeddedValkey

        valkey = EmbeddedValkey()
        redis_url = valkey.start()
    app = create_app(
        redis_url,
        token=args.token,
        current_key=os.environ.get("QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT_SIGNING_KEY),
        next_key=os.environ.get("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT_SIGNING_KEY),
        time_scale=args.time_scale,
    )
    logger.info("local QStash on http://%s:%d (redis %s)", args.host, args.port, redis_url)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if valkey is not None:
            valkey.stop()


if __name__ == "__main__":
    main()
