"""Connections to the shared stores: one per thread, and SQLite opened in WAL mode even when other
processes open the same fresh file at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

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


Connection = TypeVar("Connection")


class ThreadConnections(Generic[Connection]):
    """One connection per thread, opened on first use: neither sqlite3's nor psycopg's connections may
    be shared by the threads of a service worker. A closed one (PostgreSQL restarted) is reopened."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._local = threading.local()

    def get(self) -> Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(connection, "closed", False):
            connection = self._connect()
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Close this thread's connection (each store closes from the thread that used it)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
