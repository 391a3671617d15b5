"""Secure aggregation: fixed-point encoding, masks, dropout recovery and the protocol's refusals."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag
from scipy import stats

from worker.engine.privacy import secagg
from worker.engine.privacy.masking import SecAggParams, decode, encode, flatten, prg, unflatten
from worker.engine.privacy.secagg import (
    PublicKeys,
    Reveal,
    SecAggClient,
    SecAggServer,
    TooFewSurvivors,
    UnsafeReveal,
    neighbour_graph,
    secure_mean,
)

Sites = dict[str, tuple[np.ndarray, int]]


def sites(n: int, length: int = 1000, seed: int = 0) -> Sites:
    """Weights near those of a trained CNN; counts straddle the default weight cap of 10,000."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(50, 15_000, n)
    return {f"site-{i:02d}": (rng.normal(0, 0.3, length).astype(np.float32), int(c)) for i, c in enumerate(counts)}


def fedavg(vectors: Sites, keep: set[str], cap: int) -> tuple[np.ndarray, int]:
    """The plain weighted FedAvg of the kept sites, weights capped."""
    chosen = sorted(keep)
    counts = [min(vectors[s][1], cap) for s in chosen]
    stacked = np.stack([vectors[s][0].astype(np.float64) for s in chosen])
    return np.average(stacked, axis=0, weights=counts), sum(counts)


class MaskedRound(NamedTuple):
    clients: dict[str, SecAggClient]
    server: SecAggServer
    masked: dict[str, np.ndarray]


def masked_round(vectors: Sites, params: SecAggParams, rnd: int = 1) -> MaskedRound:
    """Every site advertises, shares and masks; the masked updates are returned, not yet sent."""
    clients = {s: SecAggClient(s, rnd, params) for s in vectors}
    server = SecAggServer(rnd, params)
    roster = server.roster({s: c.advertise() for s, c in clients.items()})
    inboxes = server.route({s: c.share(roster) for s, c in clients.items()})
    return MaskedRound(clients, server, {s: clients[s].mask(*vectors[s], inboxes[s]) for s in inboxes})


def test_secure_mean_is_fedavg_within_the_quantization_bound() -> None:
    vectors, params = sites(10), SecAggParams(threshold=6)
    mean, total = secure_mean(vectors, params, round=1)
    expected, expected_total = fedavg(vectors, set(vectors), params.weight_cap)
    bound = params.error_bound(10, 10, total)
    error = np.abs(mean - expected).max()
    assert total == expected_total  # exactly the sum of the capped counts
    assert bound < 1e-4
    assert bound / 10 < error < bound  # the bound holds and is not loose by orders of magnitude


def test_sites_that_drop_after_masking_are_recovered() -> None:
    vectors, params = sites(10), SecAggParams(threshold=5)
    gone = {"site-02", "site-07", "site-09"}
    mean, total = secure_mean(vectors, params, round=4, drop_after_masking=gone)
    expected, expected_total = fedavg(vectors, set(vectors) - gone, params.weight_cap)
    assert total == expected_total
    assert np.abs(mean - expected).max() < params.error_bound(10, 7, total)


def test_sparse_graph_round_with_drops_before_sharing_and_after_masking() -> None:
    vectors, params = sites(20, length=200), SecAggParams(threshold=3, neighbours=4)
    mean, total = secure_mean(vectors, params, 2, drop_before_sharing={"site-05"}, drop_after_masking={"site-11"})
    expected, expected_total = fedavg(vectors, set(vectors) - {"site-05", "site-11"}, params.weight_cap)
    assert total == expected_total
    assert np.abs(mean - expected).max() < params.error_bound(20, 18, total)


def test_below_threshold_the_round_fails_before_any_share_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    combined: list[object] = []
    monkeypatch.setattr(secagg, "combine", lambda *args: combined.append(args))
    vectors = sites(4, length=10)
    _, server, masked = masked_round(vectors, SecAggParams(threshold=3))
    survivors = {s: masked[s] for s in ("site-00", "site-01")}
    with pytest.raises(TooFewSurvivors, match=r"round 1: 2 surviving share holders, below the threshold 3") as err:
        server.unmask_request(survivors)
    assert (err.value.survivors, err.value.threshold) == (2, 3)
    with pytest.raises(ValueError, match="unmask_request"):  # no request: the server cannot even try to aggregate
        server.aggregate(survivors, {})
    assert combined == []


def test_too_few_revealed_shares_unmask_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    combined: list[object] = []
    monkeypatch.setattr(secagg, "combine", lambda *args: combined.append(args))
    clients, server, masked = masked_round(sites(4, length=10), SecAggParams(threshold=3))
    request = server.unmask_request(masked)
    one = {"site-00": clients["site-00"].unmask(request.survivors, request.dropped)}
    with pytest.raises(TooFewSurvivors):
        server.aggregate(masked, one)
    assert combined == []


def test_too_few_sites_to_start_a_round() -> None:
    with pytest.raises(ValueError, match="threshold 4 exceeds the 3 share holders"):
        secure_mean(sites(3, length=5), SecAggParams(threshold=4), round=1)


def test_the_server_sees_uniform_words_not_the_update() -> None:
    vectors, params = sites(3, length=250_000), SecAggParams(threshold=2)
    masked = masked_round(vectors, params).masked
    plain = encode(*vectors["site-00"], params, 3)
    seen = masked["site-00"]
    assert np.mean(seen == plain) < 1e-3

    def byte_histogram_p(words: np.ndarray) -> float:
        counts = np.bincount(words.view(np.uint8), minlength=256)
        return float(stats.chisquare(counts).pvalue)

    assert byte_histogram_p(seen) > 1e-6
    assert byte_histogram_p(plain) < 1e-6  # the test can tell an unmasked update apart
    top_bits = np.bincount(seen >> 28, minlength=16)
    assert stats.chisquare(top_bits).pvalue > 1e-6


def test_keys_and_masks_are_fresh_each_round() -> None:
    vectors, params = sites(3, length=100), SecAggParams(threshold=2)
    first, _, masked_1 = masked_round(vectors, params, rnd=1)
    second, _, masked_2 = masked_round(vectors, params, rnd=2)
    for site in vectors:
        one, two = first[site].advertise(), second[site].advertise()
        assert one.mask_key != two.mask_key and one.share_key != two.share_key
        assert np.mean(masked_1[site] == masked_2[site]) < 0.05


def test_a_site_refuses_to_reveal_both_shares_of_one_site() -> None:
    clients = masked_round(sites(4, length=10), SecAggParams(threshold=2)).clients
    site = clients["site-00"]
    with pytest.raises(UnsafeReveal, match="site-01"):
        site.unmask(["site-00", "site-01", "site-02"], ["site-01"])
    site.unmask(["site-00", "site-02", "site-03"], ["site-01"])
    with pytest.raises(UnsafeReveal, match="site-01"):  # a later request cannot turn site-01 into a survivor
        site.unmask(["site-00", "site-01", "site-02"], [])
    with pytest.raises(UnsafeReveal, match="site-03"):
        clients["site-03"].unmask(["site-00", "site-01"], ["site-03"])


def test_reveal_holds_seed_shares_of_survivors_and_key_shares_of_the_dropped() -> None:
    clients = masked_round(sites(4, length=10), SecAggParams(threshold=2)).clients
    reveal = clients["site-00"].unmask(["site-00", "site-02", "site-03"], ["site-01"])
    assert sorted(reveal.seed_shares) == ["site-00", "site-02", "site-03"]
    assert sorted(reveal.key_shares) == ["site-01"]


def test_tampered_or_misaddressed_ciphertext_is_rejected() -> None:
    params = SecAggParams(threshold=2)
    clients = {s: SecAggClient(s, 1, params) for s in ("a", "b", "c")}
    roster = {s: c.advertise() for s, c in clients.items()}
    outboxes = {s: c.share(roster) for s, c in clients.items()}
    tampered = bytearray(outboxes["b"]["a"])
    tampered[-1] ^= 1
    with pytest.raises(InvalidTag):
        clients["a"].mask(np.zeros(3), 1, {"b": bytes(tampered), "c": outboxes["c"]["a"]})
    with pytest.raises(InvalidTag):  # b's ciphertext for c, replayed to a: the associated data names the recipient
        clients["a"].mask(np.zeros(3), 1, {"b": outboxes["b"]["c"], "c": outboxes["c"]["a"]})


def test_a_site_masks_once() -> None:
    clients = masked_round(sites(3, length=5), SecAggParams(threshold=2)).clients
    with pytest.raises(RuntimeError, match="once"):
        clients["site-00"].mask(np.zeros(5), 1, {})


def test_a_corrupt_key_share_is_caught_by_the_public_key() -> None:
    vectors = sites(4, length=10)
    clients, server, masked = masked_round(vectors, SecAggParams(threshold=2))
    survivors = {s: masked[s] for s in ("site-00", "site-01", "site-02")}
    request = server.unmask_request(survivors)
    reveals = {s: clients[s].unmask(request.survivors, request.dropped) for s in survivors}
    honest = reveals["site-00"]
    forged = bytearray(honest.key_shares["site-03"])
    forged[-1] ^= 1
    reveals["site-00"] = Reveal(honest.seed_shares, {"site-03": bytes(forged)})
    with pytest.raises(ValueError, match="site-03"):
        server.aggregate(survivors, reveals)


def test_encoding_matches_hand_computation() -> None:
    params = SecAggParams(threshold=2, clip_range=1.0, weight_cap=10)
    scale = (2**31 - 1 - 2) / 2  # sites * (scale * clip + 1/2) stays below 2^31
    assert params.scale(2) == scale
    words = encode(np.array([0.5, -1.0, 3.0]), 20, params, sites=2)  # weight 20 capped to 10: fraction 1
    assert words.tolist() == [round(0.5 * scale), 2**32 - 1073741822, 1073741822, 10]  # -1073741822.5 rounds to even
    other = encode(np.array([-0.25, 0.5, 0.0]), 5, params, sites=2)  # fraction 1/2
    mean, total = decode(words + other, params, 2)
    assert total == 15
    expected = np.array([10 * 0.5 + 5 * -0.25, -10 + 5 * 0.5, 10 * 1.0]) / 15
    assert np.abs(mean - expected).max() < params.error_bound(2, 2, 15)


@pytest.mark.parametrize(
    ("vector", "weight", "message"),
    [
        (np.array([0.0, np.nan]), 1, "NaN or infinite"),
        (np.array([np.inf]), 1, "NaN or infinite"),
        (np.array([1.0]), 0, "positive sample count"),
        (np.array([1, 2]), 1, "1-D float vector"),
    ],
)
def test_encode_rejects_what_it_cannot_encode(vector: np.ndarray, weight: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(vector, weight, SecAggParams(threshold=2), sites=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1}, "threshold must be at least 2"),
        ({"threshold": 2, "clip_range": 0.0}, "clip_range must be positive"),
        ({"threshold": 2, "clip_range": float("inf")}, "clip_range must be positive"),
        ({"threshold": 2, "weight_cap": 0}, "weight_cap must be at least 1"),
        ({"threshold": 5, "neighbours": 3}, "3 neighbours hold too few shares"),
    ],
)
def test_params_reject_unsound_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecAggParams(**kwargs)


def test_params_reject_a_weight_sum_that_overflows() -> None:
    with pytest.raises(ValueError, match="overflow the 32-bit weight sum"):
        SecAggParams(threshold=2, weight_cap=2**31).check(2)


def test_degree_is_complete_up_to_ten_sites_then_logarithmic() -> None:
    params = SecAggParams(threshold=3)
    assert [params.degree(n) for n in (3, 10, 11, 20, 100)] == [2, 9, 10, 14, 20]
    assert SecAggParams(threshold=3, neighbours=5).degree(20) == 6  # odd degrees round up: the ring is even


def test_neighbour_graph_is_symmetric_regular_and_changes_with_the_round() -> None:
    ids = [f"s{i}" for i in range(12)]
    graph = neighbour_graph(ids, 1, 4)
    assert all(len(peers) == 4 and site not in peers for site, peers in graph.items())
    assert all(site in graph[peer] for site, peers in graph.items() for peer in peers)
    assert graph != neighbour_graph(ids, 2, 4)


def test_public_keys_round_trip_as_64_bytes() -> None:
    keys = SecAggClient("a", 1, SecAggParams(threshold=2)).advertise()
    assert len(keys.to_bytes()) == 64
    assert PublicKeys.from_bytes(keys.to_bytes()) == keys
    with pytest.raises(ValueError, match="64 bytes"):
        PublicKeys.from_bytes(keys.to_bytes()[:63])


def test_prg_is_a_deterministic_stream_per_seed() -> None:
    seed = bytes(range(32))
    assert np.array_equal(prg(seed, 10), prg(seed, 20)[:10])
    assert not np.array_equal(prg(seed, 10), prg(bytes(32), 10))


def test_flatten_and_unflatten_round_trip_layers() -> None:
    layers = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0]), np.ones((1, 1, 2), dtype=np.float32)]
    vector = flatten(layers)
    assert vector.tolist() == [0, 1, 2, 3, 4, 5, 7, 1, 1]
    back = unflatten(vector, layers)
    assert all(
        b.shape == w.shape and b.dtype == w.dtype and np.array_equal(b, w) for b, w in zip(back, layers, strict=True)
    )
    with pytest.raises(ValueError, match="does not fill layers of 9 values"):
        unflatten(vector[:-1], layers)
