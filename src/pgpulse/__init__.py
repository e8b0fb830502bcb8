"""pgpulse: real-time, multi-tenant events for apps that already run PostgreSQL.

The public API is what ``__all__`` lists; every other module is internal.
The server is :func:`pgpulse.app.create_app` (and ``pgpulse serve``); the
Python client is :class:`pgpulse.client.Client`; jobs run in a :class:`Worker`
(``pgpulse worker``).
"""

from __future__ import annotations

from .errors import (
    AuthError,
    ConfigError,
    DatabaseUnavailable,
    ForbiddenTopic,
    InvalidEvent,
    InvalidJob,
    JobFailed,
    PgpulseError,
    TrackError,
)
from .events import Event
from .jobs import submit_job
from .publish import publish
from .worker import Job, JobLost, Worker

__version__ = "0.1.0"

# An explicit list: the one place to import these from, for users and for mypy.
__all__ = [
    "AuthError",
    "ConfigError",
    "DatabaseUnavailable",
    "Event",
    "ForbiddenTopic",
    "InvalidEvent",
    "InvalidJob",
    "Job",
    "JobFailed",
    "JobLost",
    "PgpulseError",
    "TrackError",
    "Worker",
    "__version__",
    "publish",
    "submit_job",
]
