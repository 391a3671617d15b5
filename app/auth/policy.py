"""Who may see which experiment: its owner, everyone if it is shared, admins always (no FastAPI here)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, true

from app.models import Experiment, Role, User


def can_see(experiment: Experiment, user: User) -> bool:
    return user.role == Role.ADMIN or experiment.shared or experiment.owner_id == user.id


def visible_to(user: User) -> ColumnElement[bool]:
    """The same rule as ``can_see``, as an SQL condition on Experiment, for lists."""
    if user.role == Role.ADMIN:
        return true()
    return (Experiment.owner_id == user.id) | Experiment.shared.is_(True)
