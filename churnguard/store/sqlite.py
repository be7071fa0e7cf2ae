"""Opening a shared SQLite store: WAL mode, waiting for the other processes that open it at once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

_RETRY_SECONDS = 0.05


def open_wal(path: Path, lock_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode with `synchronous=NORMAL` (a commit survives a killed process).

    Switching a new database to WAL takes a lock that SQLite's busy timeout does not wait for: two
    workers opening a fresh store together would see one of them fail with "database is locked" (seen
    in CI). So the switch is retried until `lock_timeout`."""
    connection = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
    deadline = time.monotonic() + lock_timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                connection.close()
                raise
            time.sleep(_RETRY_SECONDS)
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection
