"""The app's own tables: users, each in one tenant, and the messages they send.

pgpulse does not know about these tables. The app writes a message and
publishes its event in one transaction (see ``app.py``), so subscribers hear
of exactly the messages that were stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PASSWORD_ITERATIONS = 200_000  # PBKDF2-SHA256 rounds

# Two tenants with two users each; every password is "pulse" (an example, not a policy).
SEED_USERS = [
    ("acme", "alice", "Alice"),
    ("acme", "bob", "Bob"),
    ("globex", "carol", "Carol"),
    ("globex", "dave", "Dave"),
]
SEED_PASSWORD = "pulse"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(200), index=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(200), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``salt$digest`` in hex: PBKDF2 from the standard library, no extra dependency."""
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PASSWORD_ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, _ = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


async def seed(session: AsyncSession) -> None:
    """Add the example's users once; a second start finds them and adds nothing."""
    existing = set((await session.scalars(select(User.username))).all())
    password_hash = hash_password(SEED_PASSWORD)
    for tenant_id, username, display_name in SEED_USERS:
        if username not in existing:
            session.add(
                User(
                    tenant_id=tenant_id,
                    username=username,
                    display_name=display_name,
                    password_hash=password_hash,
                )
            )
