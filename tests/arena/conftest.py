"""Fixtures for arena tests: fake-engine apps and servers, vote stores on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.arena.pg import PostgresServer, skip_reason


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server for the session; skipped (saying why) where it cannot be installed."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> str:
    """The same tests on the embedded SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'votes.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def fake_client(tmp_path: Path):
    """A TestClient on the real app (create_app) around a FakeEngine, with a SQLite store under tmp_path."""
    from fastapi.testclient import TestClient

    from tests.arena.fakes import FakeEngine, make_app, make_config

    engine = FakeEngine()
    app = make_app(make_config(tmp_path), engine)
    with TestClient(app) as client:
        client.engine = engine
        yield client

