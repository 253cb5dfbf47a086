"""``/metrics``: Prometheus text for administrators, filled by real requests and syncs."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fieldsync.config import Settings
from fieldsync.errors import ConfigurationError
from fieldsync.platform import Platform
from fieldsync.security.roles import SYSTEM_ADMINISTRATOR
from fieldsync.server.metrics import Metrics, serve_metrics
from sync_world import PASSWORD, AsgiBridge, World
from test_sync import seed


@pytest.fixture
def world(platform: Platform, tmp_path: Path) -> World:
    return World(platform, tmp_path)


def _token(client: httpx.Client, user: str) -> str:
    answer = client.post(
        "/auth/token", data={"grant_type": "password", "username": user, "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_syncs_rejections_and_lag(world: World) -> None:
    org = world.platform.org
    org.user("boss", password=PASSWORD, roles=[org.role_id(SYSTEM_ADMINISTRATOR)])
    ids = seed(world)
    device = world.device("tech1")
    first = device.sync()
    # the server moves on by three versions; the next download is three behind
    r = world.platform.records
    for name in ("Pump 2", "Pump 3", "Pump 4"):
        r.update("workorder", ids["wo1"], {"name": name})
    device.sync()
    # tech1 may read tech2's account but not change it: a rejection with its code
    device.update("account", str(ids["acc1"]), {"name": "not mine"})
    report = device.sync()
    assert report.rejected == 1

    bridge = AsgiBridge(world.app)
    with httpx.Client(transport=bridge, base_url="http://testserver") as client:
        assert client.get("/metrics").status_code == 401
        tech = _token(client, "tech1")
        refused = client.get("/metrics", headers={"Authorization": f"Bearer {tech}"})
        assert refused.status_code == 403
        assert refused.json()["error"]["message"] == "metrics are for administrators"
        boss = _token(client, "boss")
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {boss}"})
    bridge.loop.close()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = _samples(answer.text)

    requests = "fieldsync_http_requests_total"
    assert _value(samples, requests, route="/sync/v1/download", method="POST", status="200") >= 2
    assert _value(samples, requests, route="/sync/v1/upload", method="POST", status="200") >= 1
    assert _value(samples, requests, route="/metrics", method="GET", status="403") == 1
    # route templates, never raw paths with ids in them
    assert all("testserver" not in dict(labels).get("route", "") for _, labels in samples)
    assert (
        _value(
            samples,
            "fieldsync_http_request_duration_seconds_count",
            route="/sync/v1/download",
            method="POST",
        )
        >= 2
    )
    # the first download carried the rows in scope
    assert (
        _value(samples, "fieldsync_sync_rows_total", direction="download")
        >= sum(first.downloaded.values())
        > 0
    )
    assert _value(samples, "fieldsync_sync_bytes_total", direction="download") > 1000
    assert _value(samples, "fieldsync_sync_rows_total", direction="upload") == 1
    assert _value(samples, "fieldsync_sync_duration_seconds_count", direction="upload") >= 1
    rejected = [
        (labels, v)
        for (name, labels), v in samples.items()
        if name == "fieldsync_sync_rejections_total"
    ]
    assert [v for _, v in rejected] == [1.0]
    # one delta download saw the device three versions behind
    assert _value(samples, "fieldsync_sync_device_lag_versions_count") >= 1
    assert _value(samples, "fieldsync_sync_device_lag_versions_bucket", le="1.0") < _value(
        samples, "fieldsync_sync_device_lag_versions_bucket", le="10.0"
    )
    assert _value(samples, "fieldsync_live_connections") == 0
    assert _value(samples, "fieldsync_db_pool_connections", state="in_use") >= 0


def test_metrics_on_their_own_address() -> None:
    metrics = Metrics()
    metrics.requests.labels("/health", "GET", "200").inc()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = serve_metrics(metrics, f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://{where}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'fieldsync_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    with pytest.raises(ConfigurationError, match="host:port"):
        serve_metrics(metrics, "nonsense")


def test_the_setting_is_declared() -> None:
    assert Settings(metrics_bind="127.0.0.1:9100").metrics_bind == "127.0.0.1:9100"
