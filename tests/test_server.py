from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from fieldsync.config import Settings
from fieldsync.platform import build
from fieldsync.server.app import create_app
from fieldsync.store.store import Store


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), platform=build(store))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.mark.anyio
async def test_health(client: httpx.AsyncClient, store: Store) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == store.dialect


@pytest.mark.anyio
async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.anyio
async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/health", content=b"\xff\xfe garbage")
    assert response.status_code == 405
    assert response.json()["error"]["code"]


@pytest.mark.anyio
async def test_a_lost_database_connection_is_a_503_to_retry(store: Store) -> None:
    import sqlalchemy as sa

    app = create_app(Settings(), platform=build(store))

    @app.get("/test/down")
    def down() -> None:
        raise sa.exc.OperationalError(
            "SELECT 1", {}, Exception("server closed the connection unexpectedly")
        )

    @app.get("/test/broken")
    def broken() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("syntax error at or near"))

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        response = await c.get("/test/down")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "unavailable" in response.json()["error"]["message"]
        assert (await c.get("/test/broken")).status_code == 500


def test_a_pooled_connection_that_died_while_idle_is_replaced(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL connections are pinged on checkout once idle a while (not on every use):
    one dropped while idle is replaced unseen; one dropped while in steady use fails one
    statement (a 503 to retry, above) and the pool renews itself."""
    import sqlalchemy as sa

    from fieldsync.store import engine as engines

    if store.dialect != "postgresql":
        pytest.skip("SQLite has no server to drop connections")
    killer = sa.create_engine(store.engine.url, poolclass=sa.NullPool)

    def pid() -> int:
        with store.read() as conn:
            return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    def kill(victim: int) -> None:
        with killer.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": victim})
            conn.commit()

    try:
        first = pid()
        kill(first)
        monkeypatch.setattr(engines, "PING_IDLE_SECONDS", 0.0)  # every checkout is "idle"
        second = pid()
        assert second != first
        monkeypatch.setattr(engines, "PING_IDLE_SECONDS", 3600.0)  # in steady use: no ping
        kill(second)
        with pytest.raises(sa.exc.OperationalError):
            pid()
        assert pid() not in (first, second)
    finally:
        killer.dispose()
