"""Callers authenticated in the last few seconds, so that most requests skip the database for who is asking.

Under load (dashboards polling, scripts) the token or session lookup was two queries and a pooled connection per
request. A secret seen within ``RECALL_S`` is answered from here instead. Revoking a token, ending a session or
changing or disabling a user in this process forgets every entry at once (``changes``, which app.auth.accounts
bumps); another API process, or a change made straight in the database, takes effect within ``RECALL_S``. An entry
never outlives the token or session it stands for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import make_transient_to_detached

from app.models import User, utcnow

RECALL_S = 5.0
MAX_ENTRIES = 10_000  # beyond this many distinct secrets in RECALL_S, start again from empty


@dataclass(frozen=True)
class Recalled:
    user: User  # a detached copy of its own: callers may attach it to their session (an owner, an audit row)
    csrf_token: str


@dataclass(frozen=True)
class _Entry:
    columns: dict[str, Any]
    csrf_token: str
    until: float  # time.monotonic()
    expires_at: datetime  # of the token or session
    generation: int


class Generation:
    """A counter that account changes bump; entries remembered under an older value are stale."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


changes = Generation()


class RecentCallers:
    def __init__(self, recall_s: float = RECALL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.recall_s = recall_s
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Recalled | None:
        entry = self._entries.get(key)
        if entry is None or entry.generation != changes.value:
            return None
        if time.monotonic() >= entry.until or utcnow() >= entry.expires_at:
            return None
        user = User(**entry.columns)
        make_transient_to_detached(user)
        return Recalled(user, entry.csrf_token)

    def put(self, key: str, user: User, expires_at: datetime, generation: int, csrf_token: str = "") -> None:
        """``generation``: ``changes.value`` read before the lookup, so a change made during it is not missed."""
        columns = {attr.key: getattr(user, attr.key) for attr in inspect(User).column_attrs}
        entry = _Entry(columns, csrf_token, time.monotonic() + self.recall_s, expires_at, generation)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = entry
