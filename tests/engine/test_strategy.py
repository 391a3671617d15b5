"""FedAvg and KeepLastUpdate on scripted client updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from worker.engine.strategy import Aggregate, FedAvg, KeepLastUpdate, strategy_for
from worker.engine.types import ClientStatus, ClientUpdate, Weights

TRAINED, KEPT = ClientStatus.TRAINED, ClientStatus.KEPT


def update(client_id: str, value: float, num_examples: int) -> ClientUpdate:
    return ClientUpdate(client_id, [np.full(2, value)], num_examples)


def test_fedavg_weights_this_rounds_updates_by_sample_count() -> None:
    result = FedAvg().aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    assert result is not None
    np.testing.assert_allclose(result.weights[0], [4.0, 4.0])  # (1 * 1 + 3 * 5) / 4
    assert result.counted == {"a": TRAINED, "b": TRAINED}


def test_fedavg_without_updates_keeps_the_current_weights() -> None:
    assert FedAvg().aggregate(1, []) is None


def test_fedavg_forgets_a_client_that_stopped_sending() -> None:
    strategy = FedAvg()
    strategy.aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    result = strategy.aggregate(2, [update("a", 3.0, 1)])
    assert result is not None
    np.testing.assert_allclose(result.weights[0], [3.0, 3.0])
    assert result.counted == {"a": TRAINED}


def test_keep_last_counts_departed_client() -> None:
    strategy = KeepLastUpdate(FedAvg())
    strategy.aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    result = strategy.aggregate(2, [update("a", 3.0, 1)])
    assert result is not None
    np.testing.assert_allclose(result.weights[0], [4.5, 4.5])  # (1 * 3 + 3 * 5) / 4: b's round-1 update still counts
    assert result.counted == {"a": TRAINED, "b": KEPT}


def test_keep_last_uses_the_newest_update_of_each_client() -> None:
    strategy = KeepLastUpdate(FedAvg())
    strategy.aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    strategy.aggregate(2, [update("b", 9.0, 3)])
    result = strategy.aggregate(3, [update("a", 2.0, 1)])
    assert result is not None
    np.testing.assert_allclose(result.weights[0], [7.25, 7.25])  # (1 * 2 + 3 * 9) / 4
    assert result.counted == {"a": TRAINED, "b": KEPT}


def test_keep_last_with_nobody_answering_aggregates_the_kept_updates() -> None:
    strategy = KeepLastUpdate(FedAvg())
    strategy.aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    result = strategy.aggregate(2, [])
    assert result is not None
    np.testing.assert_allclose(result.weights[0], [4.0, 4.0])
    assert result.counted == {"a": KEPT, "b": KEPT}


def test_keep_last_before_any_update_keeps_the_current_weights() -> None:
    assert KeepLastUpdate(FedAvg()).aggregate(1, []) is None


@pytest.mark.parametrize("approach", ["drop", "keep-last"])
def test_joining_client_counts_only_from_its_first_update(approach: str) -> None:
    strategy = strategy_for(approach)
    first = strategy.aggregate(1, [update("a", 2.0, 2)])
    assert first is not None
    assert first.counted == {"a": TRAINED}
    np.testing.assert_allclose(first.weights[0], [2.0, 2.0])
    second = strategy.aggregate(2, [update("a", 2.0, 2), update("c", 8.0, 6)])
    assert second is not None
    assert second.counted == {"a": TRAINED, "c": TRAINED}
    np.testing.assert_allclose(second.weights[0], [6.5, 6.5])  # (2 * 2 + 6 * 8) / 8


class RoundRecorder:
    """An inner strategy that records the rounds it is asked to aggregate."""

    def __init__(self) -> None:
        self.rounds: list[int] = []

    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        self.rounds.append(rnd)
        return FedAvg().aggregate(rnd, updates, current)

    def state(self) -> list[ClientUpdate]:
        return []

    def restore(self, state: Sequence[ClientUpdate]) -> None:
        pass


def test_keep_last_passes_the_round_number_to_the_strategy_it_wraps() -> None:
    inner = RoundRecorder()
    strategy = KeepLastUpdate(inner)
    strategy.aggregate(3, [update("a", 1.0, 1)])
    strategy.aggregate(4, [])
    assert inner.rounds == [3, 4]


def test_keep_last_state_restores_into_a_fresh_strategy() -> None:
    original = KeepLastUpdate(FedAvg())
    original.aggregate(1, [update("a", 1.0, 1), update("b", 5.0, 3)])
    original.aggregate(2, [update("a", 3.0, 1)])
    state = original.state()
    assert sorted((u.client_id, float(u.weights[0][0]), u.num_examples) for u in state) == [
        ("a", 3.0, 1),
        ("b", 5.0, 3),
    ]
    restored = KeepLastUpdate(FedAvg())
    restored.restore(state)
    after_original = original.aggregate(3, [update("c", 7.0, 4)])
    after_restored = restored.aggregate(3, [update("c", 7.0, 4)])
    assert after_original is not None and after_restored is not None
    np.testing.assert_allclose(after_restored.weights[0], [5.75, 5.75])  # (1 * 3 + 3 * 5 + 4 * 7) / 8
    np.testing.assert_array_equal(after_restored.weights[0], after_original.weights[0])
    assert after_restored.counted == after_original.counted == {"a": KEPT, "b": KEPT, "c": TRAINED}


def test_keep_last_restore_replaces_the_previous_state() -> None:
    strategy = KeepLastUpdate(FedAvg())
    strategy.aggregate(1, [update("old", 100.0, 10)])
    strategy.restore([update("a", 1.0, 1)])
    result = strategy.aggregate(2, [])
    assert result is not None
    assert result.counted == {"a": KEPT}
    np.testing.assert_allclose(result.weights[0], [1.0, 1.0])


def test_fedavg_state_is_empty_and_restores_from_empty() -> None:
    strategy = FedAvg()
    strategy.aggregate(1, [update("a", 1.0, 1)])
    assert strategy.state() == []
    strategy.restore([])


def test_fedavg_refuses_the_state_of_keep_last() -> None:
    with pytest.raises(ValueError, match=r"^FedAvg keeps no state; the checkpoint belongs to another strategy$"):
        FedAvg().restore([update("a", 1.0, 1)])


def test_strategy_for_maps_approach_names_to_strategies() -> None:
    assert type(strategy_for("drop")) is FedAvg
    keep_last = strategy_for("keep-last")
    assert isinstance(keep_last, KeepLastUpdate)
    assert type(keep_last.inner) is FedAvg


def test_strategy_for_unknown_approach_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown intermittent approach 'keep'; allowed: drop, keep-last"):
        strategy_for("keep")
