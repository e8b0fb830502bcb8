"""The one error tree of pgpulse.

Every error pgpulse raises on purpose is a :class:`PgpulseError`. Each class's
docstring is its default message, so ``raise ConfigError()`` still says
something useful; pass a message to say more.
"""

from __future__ import annotations

NOT_MIGRATED = "pgpulse is not installed in this database: run `pgpulse migrate` first"
"""What any command or API says when pgpulse's schema or functions are missing."""


class PgpulseError(Exception):
    """pgpulse failed."""

    def __init__(self, message: str | None = None) -> None:
        # A docstring that spans lines is still a one-line message.
        super().__init__(message or " ".join((self.__doc__ or "").split()))


class ConfigError(PgpulseError):
    """the configuration is invalid."""


class DatabaseUnavailable(PgpulseError):
    """the database is not reachable."""


class AuthError(PgpulseError):
    """the token was refused."""


class ForbiddenTopic(AuthError):
    """the token does not allow this topic."""


class InvalidEvent(PgpulseError):
    """the event is not valid."""


class TrackError(PgpulseError):
    """the table cannot be tracked."""


class InvalidJob(PgpulseError):
    """the job is not valid."""


class JobFailed(PgpulseError):
    """the job failed.

    Raised by a job handler on purpose: its message is the job's ``error``,
    which the job's tenant sees. Any other exception is reported to the
    tenant as "internal error" only (its details go to the worker's log).
    """


class NotRunning(PgpulseError):
    """pgpulse is not running in this process: enter it in the app's lifespan, with
    FastAPI(lifespan=pulse.lifespan), or with `async with pulse: yield` inside the app's own."""
