"""Local QStash-compatible push queue server with all state in Redis."""

from lib.local.qstash.app import create_app
from lib.local.qstash.server import LocalQStashHandle, start_local_qstash

__all__ = ["LocalQStashHandle", "create_app", "start_local_qstash"]
