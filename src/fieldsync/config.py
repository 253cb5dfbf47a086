"""Settings, declared once: name, default, help. Read from ``FIELDSYNC_*`` variables, with
command-line flags on top, at start-up only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fieldsync.errors import ConfigurationError
from fieldsync.store.engine import default_database_url


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "fieldsync")


BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
BOOLEANS |= {"0": False, "false": False, "no": False, "off": False, "": False}


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    data_dir: str = setting(
        _default_data_dir(), "where the embedded SQLite database and files live"
    )
    database_url: str = setting(
        "",
        "database URL: sqlite:///path or postgresql://user@host/db "
        "(default: a SQLite file in the data directory)",
    )
    host: str = setting("127.0.0.1", "address the server listens on")
    port: int = setting(8000, "port the server listens on")
    plugins: tuple[str, ...] = setting(
        (),
        "Python modules whose register(plugins) adds plugins (comma-separated in the environment)",
    )
    log_level: str = setting("info", "log level: debug, info, warning, error")
    secret_key: str = setting(
        "",
        "key that signs access tokens (default: one generated and "
        "kept in the database, shared by every server process)",
    )
    access_token_seconds: int = setting(900, "lifetime of an access token, in seconds")
    refresh_token_days: int = setting(30, "lifetime of a sign-in session (refresh token), in days")
    refresh_grace_seconds: int = setting(
        30,
        "seconds a just-rotated refresh token is still accepted (concurrent refreshes get the "
        "same successor); 0 turns the grace off",
    )
    signin_max_failures: int = setting(
        5, "failed sign-ins per user name before sign-in is refused for a while"
    )
    signin_window_seconds: int = setting(
        900, "the window failed sign-ins are counted in, and how long sign-in stays refused"
    )
    audit_rows: int = setting(100_000, "the security audit log keeps at most this many rows")
    audit_days: int = setting(90, "the security audit log keeps rows for this many days")
    audit_per_minute: int = setting(
        20,
        "audit rows per minute for one event and one user or address; the rest are counted "
        "in a summary row",
    )
    live_keepalive_seconds: int = setting(
        15, "seconds between keep-alives on a live sync stream (proxies drop idle streams)"
    )
    live_max_seconds: int = setting(
        600, "a live sync stream ends after this many seconds; the device reconnects at once"
    )
    files_url: str = setting(
        "",
        "where file and image bytes live: a directory, or s3://bucket/prefix "
        "(default: files/ in the data directory)",
    )
    files_s3_endpoint: str = setting(
        "", "the S3 endpoint for s3:// files (MinIO: http://host:9000; default: AWS)"
    )
    max_file_mb: int = setting(
        128, "the largest file or image accepted, in MB (a column's own maximum applies too)"
    )
    files_orphan_hours: int = setting(
        24, "hours before an unreferenced file or an abandoned upload is removed"
    )
    metrics_bind: str = setting(
        "",
        "host:port to serve Prometheus metrics on without a token, for a scraper on a private "
        "network (default: only /metrics, for administrators' tokens)",
    )
    traces: bool = setting(
        False,
        "send OpenTelemetry traces (needs the otel extra; where to: the OTEL_* variables, "
        "e.g. OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    max_request_mb: int = setting(
        16, "the largest request body of the Web API, sync and administration endpoints, in MB"
    )
    max_batch_mb: int = setting(16, "the largest Web API $batch body, in MB")
    max_chunk_mb: int = setting(
        16, "the largest chunk of a chunked file upload (Web API and sync), in MB"
    )
    max_form_kb: int = setting(256, "the largest portal form or sign-in (/auth) body, in KB")
    webapi_max_requests: int = setting(
        6000, "Web API requests per user in the window, across every server process (429 past it)"
    )
    webapi_max_execution_seconds: int = setting(
        1200, "seconds of Web API execution time per user in the window, across every process"
    )
    webapi_window_seconds: int = setting(
        300, "the sliding window of the Web API's request and execution time limits, in seconds"
    )
    webapi_max_concurrent: int = setting(
        52, "Web API requests in flight at once per user, across every server process"
    )
    webapi_max_batch_operations: int = setting(
        1000, "operations in one Web API $batch, change set members included (400 past it)"
    )
    webapi_limits_sync_ms: int = setting(
        1000,
        "how often each server process shares its Web API limit counts through the database, "
        "in milliseconds",
    )
    files_chunk_kb: int = setting(
        4096,
        "the chunk size asked of file uploads, in KB (keep it under a reverse proxy's body limit)",
    )

    @property
    def database(self) -> str:
        return self.database_url or default_database_url(self.data_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Environment first, then the given overrides (``None`` means not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"FIELDSYNC_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, f.type, raw)
        for key, value in overrides.items():
            if value is not None and value != ():
                values[key] = value
        return cls(**values)


def _parse(name: str, kind: Any, raw: str) -> Any:
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"FIELDSYNC_{name.upper()} must be an integer") from None
    if kind in (bool, "bool"):
        value = raw.strip().lower()
        if value not in BOOLEANS:
            raise ConfigurationError(
                f"FIELDSYNC_{name.upper()} must be 1, true, yes, on, 0, false, no or off"
            )
        return BOOLEANS[value]
    if kind in ("tuple[str, ...]",) or name == "plugins":
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) for every setting: the docs are checked against it."""
    out = []
    for f in fields(Settings):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        if f.name == "data_dir":
            shown = "$XDG_DATA_HOME/fieldsync or ~/.local/share/fieldsync"
        out.append((f"FIELDSYNC_{f.name.upper()}", shown, f.metadata["help"]))
    return out
