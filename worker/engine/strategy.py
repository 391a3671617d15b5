"""Aggregation strategies: FedAvg and the two ways the study counts intermittent clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.engine.aggregate import weighted_mean
from worker.engine.types import ClientStatus, ClientUpdate, Weights


@dataclass(frozen=True)
class Aggregate:
    """The new global weights and, per counted client, whether its update was fresh or kept."""

    weights: Weights
    counted: dict[str, ClientStatus]


class Strategy(Protocol):
    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        """New global weights, or None to keep the current ones (nothing to aggregate). ``current`` is the global
        model the round started from, for strategies that work on each site's change (DP-FedAvg)."""
        ...

    def state(self) -> list[ClientUpdate]:
        """What must be checkpointed to resume after this round."""
        ...

    def restore(self, state: Sequence[ClientUpdate]) -> None: ...


class FedAvg:
    """Average of this round's updates weighted by training-sample count; stateless."""

    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        if not updates:
            return None
        weights = weighted_mean([(u.weights, u.num_examples) for u in updates])
        return Aggregate(weights, {u.client_id: ClientStatus.TRAINED for u in updates})

    def state(self) -> list[ClientUpdate]:
        return []

    def restore(self, state: Sequence[ClientUpdate]) -> None:
        if state:
            raise ValueError("FedAvg keeps no state; the checkpoint belongs to another strategy")


class KeepLastUpdate:
    """Approach 2 of the study: a client that did not answer still counts with its last update.

    Wraps another strategy, as Flower's DP wrappers do. A client counts from its first update,
    so a client that joins late adds nothing before it has trained once.
    """

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self._last: dict[str, ClientUpdate] = {}

    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        self._last.update({u.client_id: u for u in updates})
        fresh = {u.client_id for u in updates}
        result = self.inner.aggregate(rnd, list(self._last.values()), current)
        if result is None:
            return None
        counted = {cid: ClientStatus.TRAINED if cid in fresh else ClientStatus.KEPT for cid in result.counted}
        return Aggregate(result.weights, counted)

    def state(self) -> list[ClientUpdate]:
        return list(self._last.values())

    def restore(self, state: Sequence[ClientUpdate]) -> None:
        self._last = {u.client_id: u for u in state}


def strategy_for(approach: str) -> Strategy:
    """``drop``: plain FedAvg over the clients that answered; ``keep-last``: FedAvg with kept updates."""
    if approach == "drop":
        return FedAvg()
    if approach == "keep-last":
        return KeepLastUpdate(FedAvg())
    raise ValueError(f"unknown intermittent approach {approach!r}; allowed: drop, keep-last")
