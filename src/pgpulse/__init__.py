"""pgpulse: real-time, multi-tenant events for apps that already run PostgreSQL.

The public API is what ``__all__`` lists; every other module is internal.
The server is :func:`pgpulse.app.create_app` (and ``pgpulse serve``); the
Python client is :class:`pgpulse.client.Client`.
"""

from __future__ import annotations

from .errors import (
    AuthError,
    ConfigError,
    DatabaseUnavailable,
    ForbiddenTopic,
    InvalidEvent,
    PgpulseError,
    TrackError,
)
from .events import Event
from .publish import publish

__version__ = "0.1.0"

# An explicit list: the one place to import these from, for users and for mypy.
__all__ = [
    "AuthError",
    "ConfigError",
    "DatabaseUnavailable",
    "Event",
    "ForbiddenTopic",
    "InvalidEvent",
    "PgpulseError",
    "TrackError",
    "__version__",
    "publish",
]
