"""A fresh PostgreSQL database per test module on the real server, dropped afterwards.

The server is `CHURNGUARD_TEST_POSTGRES` (default: postgresql://postgres@127.0.0.1:5432/postgres, the
project machines' trust-auth server). Without one the tests are skipped and say why; in CI
(`CI=true`) a missing server fails them instead, so a green CI always ran them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ADMIN_URL = os.environ.get("CHURNGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _database_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    import psycopg

    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server at {ADMIN_URL} ({str(exc).strip().splitlines()[0]})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: CI must run the PostgreSQL tests")
        pytest.skip(f"{reason}; set CHURNGUARD_TEST_POSTGRES to run them")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _database_url(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
