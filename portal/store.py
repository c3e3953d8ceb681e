"""The quarantine's database: one row per held message (its bytes in a table of their own), one per recipient.

SQLite in the store directory by default; PostgreSQL (psycopg 3) when the
database URL file names it, so that every MX node's portal shares one store
and any node can ingest, show and release any message. The message's bytes
are in the database too: one transaction stores a message and its recipients,
so nothing is acknowledged to Rspamd before all of it is committed, and no
node needs another node's disk.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql import Select

from portal.config import Config
from portal.ingest import Held
from portal.release import Send

PAGE_SIZE = 50


def utcnow() -> datetime.datetime:
    """Naive UTC: both databases store it the same way."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def new_id() -> str:
    """A message id nobody can guess: 192 random bits."""
    return secrets.token_urlsafe(24)


class Base(DeclarativeBase):
    pass


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime.datetime] = mapped_column(DateTime, index=True)
    envelope_from: Mapped[str] = mapped_column(String(320))
    header_from: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float)
    symbols: Mapped[str] = mapped_column(Text)  # space-separated Rspamd symbols
    virus: Mapped[str | None] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(Integer)
    client_ip: Mapped[str] = mapped_column(String(64))


class Content(Base):
    __tablename__ = "message_contents"

    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Recipient(Base):
    __tablename__ = "recipients"
    __table_args__ = (
        UniqueConstraint("message_id", "address"),
        Index("ix_recipients_address_received", "address", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(320))
    received_at: Mapped[datetime.datetime] = mapped_column(DateTime, index=True)  # the message's, for paging
    expires_at: Mapped[datetime.datetime] = mapped_column(DateTime, index=True)
    released_at: Mapped[datetime.datetime | None] = mapped_column(DateTime)
    notified: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


@dataclass(frozen=True)
class Filters:
    address: str = ""
    sender: str = ""
    subject: str = ""
    since: datetime.date | None = None
    until: datetime.date | None = None
    reason: str = ""  # 'virus', 'spam', or a virus name / symbol to look for


@dataclass(frozen=True)
class Row:
    """One line of the list: a message and one of its recipients the viewer may act for."""

    message: Message
    recipient: Recipient


class Store:
    def __init__(self, url: str):
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: Config) -> Store:
        return cls(config.database_url())

    def create(self) -> None:
        """Create the tables that are missing (idempotent; every node may run it)."""
        Base.metadata.create_all(self.engine)

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, held: Held, config: Config) -> tuple[str, bool]:
        """Store a message with one row per recipient -> (its id, whether it is new). Raises on failure."""
        now = utcnow()
        with self.sessions() as session:
            known = session.scalar(select(Message.id).where(Message.fingerprint == held.fingerprint))
            if known is not None:
                return known, False
            message = Message(
                id=new_id(),
                fingerprint=held.fingerprint,
                received_at=now,
                envelope_from=held.envelope_from,
                header_from=held.header_from,
                subject=held.subject,
                score=held.score,
                symbols=" ".join(held.symbols),
                virus=held.virus,
                direction=held.direction,
                size=len(held.content),
                client_ip=held.client_ip,
            )
            session.add(message)
            session.flush()
            session.add(Content(message_id=message.id, data=held.content))
            for address in held.recipients:
                days = retention_days(config, held, address)
                session.add(
                    Recipient(
                        message_id=message.id,
                        address=address,
                        received_at=now,
                        expires_at=now + datetime.timedelta(days=days),
                    )
                )
            try:
                session.commit()
            except IntegrityError:
                # Another node or request stored the same message first.
                session.rollback()
                again = session.scalar(select(Message.id).where(Message.fingerprint == held.fingerprint))
                if again is None:
                    raise
                return again, False
            return message.id, True

    # --- what a viewer sees -----------------------------------------------------------------

    def page(
        self, addresses: frozenset[str] | None, filters: Filters, page: int, size: int = PAGE_SIZE
    ) -> tuple[list[Row], int]:
        """One page of rows (newest first) among `addresses` (None: every address) -> (rows, total)."""
        query = select(Message, Recipient).join(Recipient, Recipient.message_id == Message.id)
        query = _filtered(query, addresses, filters)  # type: ignore[arg-type]
        count_query = _filtered(
            select(func.count()).select_from(Recipient).join(Message, Recipient.message_id == Message.id),
            addresses,
            filters,
        )
        with self.sessions() as session:
            total = session.scalar(count_query) or 0
            found = session.execute(
                query.order_by(Recipient.received_at.desc(), Recipient.id.desc())
                .limit(size)
                .offset(max(page - 1, 0) * size)
            ).all()
            return [Row(*row.tuple()) for row in found], total

    def message(self, message_id: str, addresses: frozenset[str] | None) -> tuple[Message, list[Recipient]] | None:
        """The message and its recipients the viewer may act for; None when there is none (or no such id)."""
        with self.sessions() as session:
            message = session.get(Message, message_id)
            if message is None:
                return None
            query = select(Recipient).where(Recipient.message_id == message_id)
            if addresses is not None:
                query = query.where(Recipient.address.in_(sorted(addresses)))
            recipients = list(session.scalars(query.order_by(Recipient.address)))
            return (message, recipients) if recipients else None

    def content(self, message_id: str) -> bytes | None:
        with self.sessions() as session:
            return session.scalar(select(Content.data).where(Content.message_id == message_id))

    # --- actions ----------------------------------------------------------------------------

    def release(self, message_id: str, recipient_ids: Sequence[int], send: Send) -> list[str]:
        """Mark the recipients released and hand the message to `send` in one transaction -> the addresses sent to.

        The rows are locked (PostgreSQL) or the database is (SQLite) while the
        MX takes the message, so two nodes never release the same recipient
        twice; if the MX does not take it, nothing is marked.
        """
        with self.sessions() as session, session.begin():
            if self.engine.dialect.name == "sqlite":
                session.execute(
                    update(Recipient).where(Recipient.id == -1).values(notified=True)
                )  # the write lock first
            rows = list(
                session.scalars(
                    select(Recipient)
                    .where(Recipient.id.in_(list(recipient_ids)), Recipient.released_at.is_(None))
                    .with_for_update()
                )
            )
            if not rows:
                return []
            message = session.get(Message, message_id)
            data = session.scalar(select(Content.data).where(Content.message_id == message_id))
            if message is None or data is None:
                return []
            refused = send(message.envelope_from, sorted(row.address for row in rows), data)
            now = utcnow()
            for row in rows:
                if row.address not in refused:  # the MX took it for this recipient: never again
                    row.released_at = now
            return sorted(row.address for row in rows if row.address not in refused)

    def delete(self, message_id: str, recipient_ids: Sequence[int]) -> int:
        """Delete these recipients' rows, and the message with its bytes once no recipient is left."""
        with self.sessions() as session, session.begin():
            deleted = _count(
                session.execute(
                    delete(Recipient).where(Recipient.message_id == message_id, Recipient.id.in_(list(recipient_ids)))
                )
            )
            _drop_orphans(session, [message_id])
            return deleted

    def purge(self, now: datetime.datetime | None = None) -> tuple[int, int]:
        """Delete the expired recipient rows and the messages left without any -> (recipients, messages).

        Idempotent, and safe on every node at once: a second run finds nothing.
        """
        now = now or utcnow()
        with self.sessions() as session, session.begin():
            recipients = _count(session.execute(delete(Recipient).where(Recipient.expires_at <= now)))
            orphans = list(
                session.scalars(select(Message.id).where(~exists().where(Recipient.message_id == Message.id)))
            )
            messages = _drop_orphans(session, orphans)
            return recipients, messages

    # --- digests ----------------------------------------------------------------------------

    def claim_unnotified(self) -> dict[str, list[Row]]:
        """address -> its held rows not yet in a digest, oldest first; claimed for this run.

        One UPDATE marks them and returns their ids, so two nodes running the digest at once
        claim disjoint rows: no item reaches two digests. Rows whose digest is not sent after all
        go back with unclaim().
        """
        claim = (
            update(Recipient)
            .where(Recipient.notified.is_(False), Recipient.released_at.is_(None))
            .values(notified=True)
            .returning(Recipient.id)
        )
        with self.sessions() as session, session.begin():
            claimed = list(session.scalars(claim))
        if not claimed:
            return {}
        query = (
            select(Message, Recipient)
            .join(Recipient, Recipient.message_id == Message.id)
            .where(Recipient.id.in_(claimed))
            .order_by(Recipient.address, Recipient.received_at, Recipient.id)
        )
        rows: dict[str, list[Row]] = {}
        with self.sessions() as session:
            for found in session.execute(query).all():
                message, recipient = found.tuple()
                rows.setdefault(recipient.address, []).append(Row(message, recipient))
        return rows

    def unclaim(self, recipient_ids: Iterable[int]) -> None:
        """Back to pending: their digest was not sent (the MX did not take it)."""
        with self.sessions() as session, session.begin():
            session.execute(update(Recipient).where(Recipient.id.in_(list(recipient_ids))).values(notified=False))


def retention_days(config: Config, held: Held, address: str) -> int:
    """Inbound: the recipient's domain's retention; outbound: the sender's domain's. Else the exporter's value."""
    domain = (address if held.direction == "inbound" else held.envelope_from).rpartition("@")[2].lower()
    return config.retention_days(domain, held.direction, held.retention_days)


def _filtered(query: Select[Any], addresses: frozenset[str] | None, filters: Filters) -> Select[Any]:
    if addresses is not None:
        query = query.where(Recipient.address.in_(sorted(addresses)))
    if filters.address:
        query = query.where(Recipient.address == filters.address.lower())
    if filters.sender:
        pattern = f"%{_like(filters.sender.lower())}%"
        query = query.where(
            or_(
                func.lower(Message.envelope_from).like(pattern, escape="\\"),
                func.lower(Message.header_from).like(pattern, escape="\\"),
            )
        )
    if filters.subject:
        query = query.where(func.lower(Message.subject).like(f"%{_like(filters.subject.lower())}%", escape="\\"))
    if filters.since is not None:
        query = query.where(Recipient.received_at >= datetime.datetime.combine(filters.since, datetime.time()))
    if filters.until is not None:
        end = datetime.datetime.combine(filters.until, datetime.time()) + datetime.timedelta(days=1)
        query = query.where(Recipient.received_at < end)
    if filters.reason == "virus":
        query = query.where(Message.virus.is_not(None))
    elif filters.reason == "spam":
        query = query.where(Message.virus.is_(None))
    elif filters.reason:
        pattern = f"%{_like(filters.reason.lower())}%"
        query = query.where(
            or_(
                func.lower(Message.virus).like(pattern, escape="\\"),
                func.lower(Message.symbols).like(pattern, escape="\\"),
            )
        )
    return query


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _drop_orphans(session: Session, message_ids: list[str]) -> int:
    dropped = 0
    for message_id in message_ids:
        if session.scalar(select(exists().where(Recipient.message_id == message_id))):
            continue
        session.execute(delete(Content).where(Content.message_id == message_id))
        dropped += _count(session.execute(delete(Message).where(Message.id == message_id)))
    return dropped


def _count(result: object) -> int:
    """The rows a DELETE or UPDATE touched."""
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def _sqlite_pragmas(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
