"""The example app: its own users, login and messages, with pgpulse inside.

What pgpulse needs from an app, and where this one gives it:

* ``current_principal``: who a request or WebSocket is, from the app's own
  session cookie. pgpulse calls it for ``/realtime/ws`` and its HTTP routes.
* ``async with pulse:`` in the app's own lifespan, beside the app's own
  start-up (tables, seed users) and a job worker.
* ``pgpulse.publish(session, ...)`` in ``send_message``: the app's message
  and its event commit in the app's own SQLAlchemy transaction.

The page (``page/``, built with Vite) is served by the app itself, so the
browser talks to one origin: no CORS, and the cookie goes everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from starlette.requests import HTTPConnection

import pgpulse
from pgpulse.fastapi import Pgpulse, Principal

from .jobs import worker
from .models import Base, Message, User, check_password, seed
from .sessions import COOKIE_NAME, SESSION_SECONDS, SessionSigner

REALTIME_PREFIX = "/realtime"


@dataclass(frozen=True)
class Config:
    database_url: str | None
    """The app's PostgreSQL (``postgresql://...``, with or without ``+psycopg``);
    None runs pgpulse's embedded PostgreSQL in ``PGPULSE_DATA_DIR`` and uses it."""
    secret_key: bytes
    """Signs session cookies; at least 32 bytes."""
    page_dir: Path | None = None
    """The built page (``index.html`` and its assets); None serves no page."""
    run_worker: bool = True
    """Run the job worker inside the app (else run ``pgpulse worker`` beside it)."""


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy names the driver in the URL: the same database, through psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


class Database:
    """The app's SQLAlchemy engine, opened in the lifespan once the URL is known.

    With no URL configured, the database is the embedded one pgpulse starts,
    so the engine can only be made after ``async with pulse:``.
    """

    def __init__(self) -> None:
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    def open(self, url: str) -> None:
        self._engine = create_async_engine(sqlalchemy_url(url), pool_size=5)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the database is opened in the app's lifespan")
        return self._engine

    def session(self) -> AsyncSession:
        if self._sessions is None:
            raise RuntimeError("the database is opened in the app's lifespan")
        return self._sessions()

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


@dataclass(frozen=True)
class State:
    """What the app's routes share, kept on ``app.state.example``."""

    database: Database
    signer: SessionSigner


def state(conn: HTTPConnection) -> State:
    found: State = conn.app.state.example
    return found


# -- who is calling: the app's own login ----------------------------------------


async def signed_in_user(conn: HTTPConnection) -> User | None:
    """The user of a valid session cookie, or None."""
    app = state(conn)
    user_id = app.signer.read(conn.cookies.get(COOKIE_NAME))
    if user_id is None:
        return None
    async with app.database.session() as session:
        return await session.get(User, user_id)


async def current_principal(conn: HTTPConnection) -> Principal | None:
    """The app's login as pgpulse needs it: tenant and user. None refuses the caller."""
    user = await signed_in_user(conn)
    if user is None:
        return None
    # "jobs": a signed-in user may start jobs with POST /realtime/api/jobs.
    return Principal(tenant_id=user.tenant_id, user_id=user.username, scopes=frozenset({"jobs"}))


async def require_user(conn: HTTPConnection) -> User:
    user = await signed_in_user(conn)
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


CurrentUser = Annotated[User, Depends(require_user)]
AppState = Annotated[State, Depends(state)]


# -- the app's own routes ---------------------------------------------------------


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class UserOut(BaseModel):
    username: str
    display_name: str
    tenant_id: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(username=user.username, display_name=user.display_name, tenant_id=user.tenant_id)


class MessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class MessageSent(BaseModel):
    id: int
    event_id: int


class NotificationOut(BaseModel):
    """A message as ``<NotificationCenter>`` reads its history."""

    id: int
    message: str
    created_at: datetime


def notification_text(author: User, text: str) -> str:
    return f"{author.display_name}: {text}"


router = APIRouter(prefix="/api")


@router.post("/login", response_model=UserOut)
async def login(body: LoginIn, response: Response, app: AppState) -> UserOut:
    async with app.database.session() as session:
        user = await session.scalar(select(User).where(User.username == body.username))
    if user is None or not check_password(body.password, user.password_hash):
        raise HTTPException(401, "wrong username or password")
    response.set_cookie(
        COOKIE_NAME,
        app.signer.make(user.id),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
    )
    return UserOut.of(user)


@router.post("/logout", status_code=204)
async def logout(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, httponly=True, samesite="lax")


@router.get("/me", response_model=UserOut)
async def me(user: CurrentUser) -> UserOut:
    return UserOut.of(user)


@router.post("/messages", status_code=201, response_model=MessageSent)
async def send_message(body: MessageIn, user: CurrentUser, app: AppState) -> MessageSent:
    """Store a message for the user's team and tell the team, in one transaction.

    Had anything failed before the commit, neither the message nor its event
    would exist: no page hears of a message that was not stored.
    """
    async with app.database.session() as session, session.begin():
        message = Message(tenant_id=user.tenant_id, author_id=user.id, text=body.text)
        session.add(message)
        await session.flush()  # assigns message.id
        event_id = await pgpulse.publish(
            session,
            tenant_id=user.tenant_id,
            topic="notifications",
            type="notification",
            data={"message": notification_text(user, body.text), "notification_id": message.id},
        )
    return MessageSent(id=message.id, event_id=event_id)


@router.get("/notifications", response_model=list[NotificationOut])
async def notifications(
    user: CurrentUser,
    app: AppState,
    before: int | None = Query(default=None, ge=1),
    limit: int = Query(default=50, ge=1, le=500),
) -> list[NotificationOut]:
    """The team's messages, newest first: the history ``<NotificationCenter>`` loads."""
    query = (
        select(Message, User)
        .join(User, Message.author_id == User.id)
        .where(Message.tenant_id == user.tenant_id)
        .order_by(Message.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(Message.id < before)
    async with app.database.session() as session:
        rows = (await session.execute(query)).tuples().all()
    return [
        NotificationOut(
            id=message.id,
            message=notification_text(author, message.text),
            created_at=message.created_at,
        )
        for message, author in rows
    ]


# -- the app ------------------------------------------------------------------------


def create_app(config: Config) -> FastAPI:
    database = Database()
    pulse = Pgpulse(database_url=config.database_url, principal=current_principal)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with pulse:
            url = pulse.runtime.database_url  # the configured one, or the embedded one
            database.open(url)
            try:
                async with database.engine.begin() as conn:
                    await conn.run_sync(Base.metadata.create_all)
                async with database.session() as session, session.begin():
                    await seed(session)
                stop = asyncio.Event()
                job_worker = (
                    asyncio.create_task(worker.run(url, stop), name="example-jobs")
                    if config.run_worker
                    else None
                )
                try:
                    yield
                finally:
                    stop.set()
                    if job_worker is not None:
                        await job_worker
            finally:
                await database.close()

    app = FastAPI(title="pgpulse FastAPI example", lifespan=lifespan)
    app.state.example = State(database=database, signer=SessionSigner(config.secret_key))
    app.include_router(router)
    app.include_router(pulse.router, prefix=REALTIME_PREFIX)
    if config.page_dir is not None:
        # Last: every path the routes above do not answer is the page's.
        app.mount("/", StaticFiles(directory=config.page_dir, html=True), name="page")
    return app
