"""An app of its own with pgpulse inside: ``uvicorn tests.e2e.library_app:app --workers 2``.

What a user's app looks like: its own table and SQLAlchemy session, its
own login (an HMAC-signed session cookie), its own endpoint that writes an
order and publishes the event in the same transaction, and pgpulse's router
under ``/realtime`` with the principal taken from the cookie. Configured by
the environment: ``DATABASE_URL`` (an SQLAlchemy URL, as such apps have)
and ``APP_SECRET``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Cookie, Depends, FastAPI, HTTPException, Response
from pydantic import BaseModel
from sqlalchemy import Integer, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import pgpulse
from pgpulse.fastapi import Pgpulse, Principal

SECRET = os.environ["APP_SECRET"].encode()
engine = create_async_engine(os.environ["DATABASE_URL"], pool_size=2)
sessions = async_sessionmaker(engine, expire_on_commit=False)

ORDERS_TABLE = "library_orders"  # created by the tests: two workers would race to create it


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = ORDERS_TABLE
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String)
    total: Mapped[int] = mapped_column(Integer)


# -- the app's own login ----------------------------------------------------------


def sign(tenant: str, user: str) -> str:
    payload = f"{tenant}:{user}"
    mac = hmac.new(SECRET, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}:{mac}"


async def current_principal(
    session: Annotated[str | None, Cookie()] = None,
) -> Principal | None:
    """The signed-in user, from the session cookie; None when there is none (refused)."""
    if not session:
        return None
    tenant, _, rest = session.partition(":")
    user, _, mac = rest.partition(":")
    if not hmac.compare_digest(mac, sign(tenant, user).rsplit(":", 1)[1]):
        raise HTTPException(401, "session cookie is not valid")
    return Principal(tenant_id=tenant, user_id=user)


def authorize_topic(principal: Principal, topic: str) -> bool:
    """Everyone reads orders and notifications; only user "boss" reads "audit"."""
    if topic == "audit":
        return principal.user_id == "boss"
    return topic in ("orders", "notifications")


pulse = Pgpulse(principal=current_principal, authorize_topic=authorize_topic)
app = FastAPI(lifespan=pulse.lifespan)
app.include_router(pulse.router, prefix="/realtime")
app.include_router(pulse.health_router, prefix="/realtime")


class Login(BaseModel):
    tenant: str
    user: str


@app.post("/login")
async def login(body: Login, response: Response) -> dict[str, str]:
    response.set_cookie("session", sign(body.tenant, body.user), httponly=True, samesite="lax")
    return {"tenant": body.tenant, "user": body.user}


# -- the app's own endpoints ---------------------------------------------------------


async def db_session() -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


async def signed_in(
    principal: Annotated[Principal | None, Depends(current_principal)],
) -> Principal:
    if principal is None:
        raise HTTPException(401, "sign in first")
    return principal


class OrderIn(BaseModel):
    total: int
    fail: bool = False
    """Fail after publishing, inside the transaction: nothing must be delivered."""
    for_user: str | None = None
    """Publish to one user of the tenant only."""


@app.post("/orders", status_code=201)
async def create_order(
    body: OrderIn,
    principal: Annotated[Principal, Depends(signed_in)],
    session: Annotated[AsyncSession, Depends(db_session)],
) -> dict[str, Any]:
    async with session.begin():
        order = Order(tenant_id=principal.tenant_id, total=body.total)
        session.add(order)
        await session.flush()
        await pgpulse.publish(
            session,
            tenant_id=principal.tenant_id,
            type="order.created",
            data={"order_id": order.id, "total": body.total},
            topic="orders",
            user_id=body.for_user,
        )
        if body.fail:
            raise HTTPException(409, "order refused after publishing; rolled back")
    return {"order_id": order.id}


@app.get("/whoami")
async def whoami() -> dict[str, Any]:
    """Which worker answered, and whether its pgpulse is running and listening."""
    ready = pulse.running and pulse.runtime.listener.connected
    return {"pid": os.getpid(), "ready": ready}
