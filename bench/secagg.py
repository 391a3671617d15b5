"""Secure aggregation cost: seconds per site to mask, seconds for the server to unmask, bytes per site and round.

Runs every phase of worker.engine.privacy.secagg in one process with real keys, once with every site surviving
and once with one site dropping after masking (the server then also removes that site's pairwise masks).
Usage: python -m bench.secagg [--sites 3 10] [--length 1200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import astuple

import numpy as np

from worker.engine.privacy.masking import SecAggParams
from worker.engine.privacy.secagg import SecAggClient, SecAggServer

COLUMNS = [("sites", 5), ("drop", 5), ("share s", 8), ("mask s", 8), ("reveal s", 8), ("unmask s", 9)]
COLUMNS += [("sent B", 12), ("received B", 10)]


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def one_round(n: int, length: int, drop: bool, rnd: int) -> dict[str, float]:
    """Seconds of each phase (per site for the site phases) and bytes one site sends and receives."""
    rng = np.random.default_rng(rnd)
    params = SecAggParams(threshold=max(2, n // 2 + 1))
    ids = [f"site-{i:02d}" for i in range(n)]
    vectors = {s: (rng.normal(0, 0.1, length).astype(np.float32), 500) for s in ids}
    clients = {s: SecAggClient(s, rnd, params) for s in ids}
    server = SecAggServer(rnd, params)
    roster = server.roster({s: c.advertise() for s, c in clients.items()})
    started = time.perf_counter()
    outboxes = {s: c.share(roster) for s, c in clients.items()}
    share_s = (time.perf_counter() - started) / n
    inboxes = server.route(outboxes)
    masked, mask_s = {}, []
    for s in ids:
        started = time.perf_counter()
        masked[s] = clients[s].mask(*vectors[s], inboxes[s])
        mask_s.append(time.perf_counter() - started)
    if drop:
        del masked[ids[-1]]
    started = time.perf_counter()
    request = server.unmask_request(masked)
    reveals = {s: clients[s].unmask(request.survivors, request.dropped) for s in request.survivors}
    reveal_s = (time.perf_counter() - started) / len(reveals)
    unmask_s = timed(lambda: server.aggregate(masked, reveals))
    site = ids[0]
    sent = 64 + sum(map(len, outboxes[site].values())) + masked[site].nbytes
    sent += sum(map(len, reveals[site].seed_shares.values())) + sum(map(len, reveals[site].key_shares.values()))
    received = 64 * n + sum(map(len, inboxes[site].values())) + len(json.dumps(astuple(request)))
    return {"share": share_s, "mask": statistics.mean(mask_s), "reveal": reveal_s, "unmask": unmask_s,
            "sent": sent, "received": received}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--length", type=int, default=1_200_000, help="parameters (the 150 px CNN has 558,273)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.length:,} parameters; plain FedAvg upload {4 * args.length:,} bytes per site and round")
    print(" ".join(f"{c:>{w}}" for c, w in COLUMNS))
    for n in args.sites:
        for drop in (False, True):
            runs = [one_round(n, args.length, drop, rnd) for rnd in range(1, args.repeats + 1)]
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            print(f"{n:>5} {drop!s:>5} {med['share']:8.4f} {med['mask']:8.4f} {med['reveal']:8.4f} "
                  f"{med['unmask']:9.4f} {med['sent']:12,.0f} {med['received']:10,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
