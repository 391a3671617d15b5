"""Who takes part in a round: the join/leave schedule and the seeded draws of partial availability."""

from __future__ import annotations

import pytest

from worker.engine.presence import Membership, Presence
from worker.engine.types import ClientEvent

CLIENTS = ["a", "b", "c", "d"]
SEED = 7
# The draws of seed 7, one per client in member order (np.random.default_rng([7, round, 0xA7A1]).random(4)):
#   round 1: 0.458 0.824 0.755 0.861     round 2: 0.103 0.717 0.724 0.151     round 3: 0.241 0.282 0.032 0.449
#   round 4: 0.105 0.734 0.228 0.998     round 5: 0.812 0.959 0.906 0.748
# A client answers when its draw is below the availability.
DRAW_C_ROUND_1 = 0.7552406170966909


def presence(availability: float, members: list[Membership] | None = None) -> Presence:
    return Presence(members or [Membership(cid) for cid in CLIENTS], availability, SEED)


def answers(p: Presence, rounds: int = 5) -> dict[int, list[str]]:
    return {rnd: p.available(rnd) for rnd in range(1, rounds + 1)}


def test_low_availability_lets_only_the_clients_with_the_lowest_draws_answer() -> None:
    # 0.1: only c's round-3 draw (0.032) lies below; a's 0.103 and 0.105 just miss
    assert answers(presence(0.1)) == {1: [], 2: [], 3: ["c"], 4: [], 5: []}


def test_high_availability_drops_only_the_clients_with_high_draws() -> None:
    assert answers(presence(0.75)) == {
        1: ["a"],  # b 0.824, c 0.755, d 0.861 miss
        2: ["a", "b", "c", "d"],
        3: ["a", "b", "c", "d"],
        4: ["a", "b", "c"],  # d 0.998 misses
        5: ["d"],  # 0.748 is the only draw below 0.75
    }


def test_client_whose_draw_equals_the_availability_misses_the_round() -> None:
    # P(draw < availability) = availability for draws uniform in [0, 1): equality is a miss
    assert presence(DRAW_C_ROUND_1).available(1) == ["a"]


def test_full_availability_keeps_every_present_client() -> None:
    assert answers(presence(1.0)) == {rnd: CLIENTS for rnd in range(1, 6)}


def test_only_present_clients_answer_and_the_others_keep_their_draws() -> None:
    members = [Membership("a", joins=3), Membership("b"), Membership("c", leaves=4), Membership("d")]
    # the answers at 0.75 above less the absent clients (a joins in round 3, c leaves in round 4); nobody's draw moves
    assert answers(presence(0.75, members)) == {
        1: [],
        2: ["b", "c", "d"],
        3: ["a", "b", "c", "d"],
        4: ["a", "b"],
        5: ["d"],
    }


def test_draws_are_the_same_for_the_same_seed_and_round() -> None:
    assert answers(presence(0.5)) == answers(presence(0.5))


@pytest.mark.parametrize("availability", [0.0, -0.5, 1.5])
def test_availability_outside_zero_to_one_is_rejected_with_its_value(availability: float) -> None:
    with pytest.raises(ValueError, match=rf"^availability must be in \(0, 1\], got {availability}$"):
        presence(availability)


def test_present_follows_the_join_and_leave_rounds() -> None:
    member = Membership("x", joins=2, leaves=4)
    assert [member.present(rnd) for rnd in range(1, 6)] == [False, True, True, False, False]
    assert Membership("y").present(100)


def test_client_joining_after_round_one_reports_joined_on_its_first_round() -> None:
    member = Membership("x", joins=2, leaves=4)
    assert [member.event(rnd) for rnd in range(1, 6)] == [None, ClientEvent.JOINED, None, ClientEvent.LEFT, None]


def test_client_there_from_round_one_reports_no_join() -> None:
    assert [Membership("x").event(rnd) for rnd in range(1, 4)] == [None, None, None]


def test_a_member_added_mid_run_leaves_the_others_draws_as_they_were() -> None:
    before = presence(0.5)
    grown = presence(0.5)
    grown.add(Membership("e", joins=3))

    for rnd in range(1, 6):
        assert [c for c in grown.available(rnd) if c != "e"] == before.available(rnd)
    assert "e" not in grown.present(2) and "e" in grown.present(3)
    with pytest.raises(ValueError, match="client a is a member already"):
        grown.add(Membership("a"))
