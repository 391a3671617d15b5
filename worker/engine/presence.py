"""Which clients take part in each round: join/leave schedule plus seeded connectivity failures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.engine.types import ClientEvent

#: the most clients a run has (``federation.clients``, ``federation.sites``)
MAX_MEMBERS = 100


@dataclass(frozen=True)
class Membership:
    client_id: str
    joins: int = 1  # first round the client trains
    leaves: int | None = None  # first round it is gone

    def present(self, rnd: int) -> bool:
        return self.joins <= rnd and (self.leaves is None or rnd < self.leaves)

    def event(self, rnd: int) -> ClientEvent | None:
        if rnd == self.joins and rnd > 1:
            return ClientEvent.JOINED
        if rnd == self.leaves:
            return ClientEvent.LEFT
        return None


class Presence:
    """The participation schedule of a run, deterministic for a seed so that a resumed run agrees."""

    def __init__(self, members: Sequence[Membership], availability: float, seed: int) -> None:
        if not 0 < availability <= 1:
            raise ValueError(f"availability must be in (0, 1], got {availability}")
        self.members = list(members)
        self.availability = availability
        self.seed = seed

    def present(self, rnd: int) -> list[str]:
        return [m.client_id for m in self.members if m.present(rnd)]

    def available(self, rnd: int) -> list[str]:
        """Present clients that answer in this round; each misses it with probability 1 - availability.

        A client answers when its draw in [0, 1) is below ``availability``, so availability 1 keeps every client.
        """
        present = self.present(rnd)
        # One draw per possible member, so that a member added mid-run (``add``) leaves the others' draws as they were.
        draws = np.random.default_rng([self.seed, rnd, 0xA7A1]).random(max(MAX_MEMBERS, len(self.members)))
        answers = {m.client_id for m, d in zip(self.members, draws, strict=False) if d < self.availability}
        return [cid for cid in present if cid in answers]

    def add(self, member: Membership) -> None:
        """A client that joins an open run (a hospital site added while it trains); raises ValueError if the id is
        taken."""
        if any(m.client_id == member.client_id for m in self.members):
            raise ValueError(f"client {member.client_id} is a member already")
        self.members.append(member)
