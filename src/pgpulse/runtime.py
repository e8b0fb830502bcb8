"""What a running server holds, built by :func:`pgpulse.app.create_app` at start."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from .admission import Admission
from .auth import Verifier
from .history import History
from .hub import Hub
from .listener import Listener
from .metrics import Metrics
from .publish import BatchPublisher
from .settings import Settings
from .transports.subscription import Stream


@dataclass(slots=True)
class Runtime:
    settings: Settings
    database_url: str
    pool: AsyncConnectionPool
    hub: Hub
    listener: Listener
    history: History
    stream: Stream
    publisher: BatchPublisher
    verifier: Verifier
    metrics: Metrics
    admission: Admission | None = None
    """Caps and connect rate of streams; None admits every stream."""
