"""The audit log: who did what, when and from where; written in the request's own transaction."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, User

ANONYMOUS = "anonymous"


def record(
    *, session: Session, user: User | None, action: str, outcome: str, client_ip: str | None, actor: str = ""
) -> None:
    """Append one event and commit it (after a rollback, so a failed request's own writes never ride along).

    ``actor`` names a caller that is not a user (``site:hospital-a``, ``command line``).
    """
    session.rollback()
    session.add(
        AuditEvent(
            user_id=user.id if user else None,
            actor=(actor or (user.name if user else ANONYMOUS))[:64],
            action=action[:200],
            outcome=outcome[:200],
            client_ip=client_ip,
        )
    )
    session.commit()


def events(*, session: Session, limit: int, offset: int) -> tuple[list[AuditEvent], int]:
    total = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query)), total
