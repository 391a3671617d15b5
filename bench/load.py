"""Load: dashboard viewers polling a 10-client x 100-round run and open event streams, against real API processes.

Starts the API (uvicorn, its own process) on this machine's PostgreSQL and Redis, writes a finished 10-client x
100-round run as the worker writes it, and a live run to which a writer process stores one round every
``--round-every`` seconds (and notifies, as the orchestrator does). Then, for ``--seconds``: ``--streams`` event
streams of the live run (in their own process), ``--viewers`` dashboards polling the big run's rounds (full, with
gzip, then increments with ``since``), and a /healthz probe. Prints p50/p95 of each, the delay from a round's
notification to its arrival on every stream, and error counts; then the cost of authentication per request: the
bearer-token lookup beside a whole authenticated GET /api/runs/{id}.
Targets on a 2-core machine: rounds p95 < 50 ms with 50 viewers, /healthz p95 < 100 ms with 500 streams, no error.
Usage: python -m bench.load [--viewers 50] [--streams 500] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import redis

from app.auth import accounts
from app.db import session_factory
from app.migrate import upgrade
from app.models import Experiment, Run, RunKind, RunStatus
from app.notify import notify
from app.run_config import RunConfig
from app.settings import Settings
from bench.service_overhead import big_run, fake_round
from tests.e2e.stack import Stack
from worker.store import save_round

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_LOAD = "postgresql+psycopg://postgres@127.0.0.1:5432/fedlens_load"
REDIS_LOAD = "redis://127.0.0.1:6379/12"
BIG_CLIENTS, BIG_ROUNDS = 10, 100


def pct(samples: list[float], q: float) -> str:
    return f"{np.percentile(samples, q) * 1000:.1f}" if samples else "n/a"


def latency(name: str, samples: list[float]) -> str:
    return f"{name}: p50 {pct(samples, 50)} ms, p95 {pct(samples, 95)} ms ({len(samples)} requests)"


def live_run(settings: Settings, rounds: int) -> str:
    cfg = RunConfig.model_validate({"federation": {"clients": 10, "rounds": rounds}})
    with session_factory(settings)() as session:
        run = Run(
            experiment=Experiment(name="load-live", config=cfg.model_dump(mode="json")),
            kind=RunKind.FEDERATED,
            seed=1,
            total_rounds=rounds,
            status=RunStatus.RUNNING,
        )
        session.add(run)
        session.commit()
        return str(run.id)


def write_rounds(settings: Settings, run_id: str, every_s: float, until: float, written: Any) -> None:
    """Store a round every ``every_s`` and notify its watchers, as the orchestrator does; report when each was out."""
    rid, number = uuid.UUID(run_id), 0
    with session_factory(settings)() as session:
        while time.time() + every_s < until:
            time.sleep(every_s)
            number += 1
            save_round(session, rid, fake_round(number, 10), "none")
            written.put((number, time.time()))
            notify(settings, rid)
    written.put(None)


def watch_streams(url: str, run_id: str, count: int, until: float, arrivals: Any, headers: dict[str, str]) -> None:
    """``count`` event streams in one event loop; each round's arrival time goes to ``arrivals``."""

    async def one(client: httpx.AsyncClient) -> tuple[list[tuple[int, float]], int]:
        seen: list[tuple[int, float]] = []
        try:
            async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
                if response.status_code != 200:
                    return seen, 1
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        seen.append((int(line[4:]), time.time()))
        except (httpx.ReadTimeout, asyncio.CancelledError):
            pass
        except httpx.HTTPError:
            return seen, 1
        return seen, 0

    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
        timeout = httpx.Timeout(connect=60, read=max(1.0, until - time.time()), write=60, pool=60)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout, headers=headers) as client:
            tasks = [asyncio.create_task(one(client)) for _ in range(count)]
            done = await asyncio.gather(*tasks)
        arrivals.put(([s for seen, _ in done for s in seen], sum(errors for _, errors in done)))

    asyncio.run(main())


async def poll(
    client: httpx.AsyncClient, path: str, last_round: int, until: float, samples: dict[str, list[float]], phase: float
) -> None:
    """One dashboard: the rounds once in full, then increments after the last round it holds, every half second,
    starting ``phase`` seconds in (independent browsers do not poll in the same millisecond)."""
    errors = samples.setdefault("errors", [])
    await asyncio.sleep(phase)
    while time.time() < until:
        began = time.perf_counter()
        full = await client.get(path)
        samples["full"].append(time.perf_counter() - began)
        if full.status_code != 200:
            errors.append(1.0)
            continue
        for _ in range(5):
            await asyncio.sleep(0.5)
            began = time.perf_counter()
            increment = await client.get(path, params={"since": last_round})
            samples["increment"].append(time.perf_counter() - began)
            errors.extend([1.0] if increment.status_code != 200 else [])


async def probe_health(client: httpx.AsyncClient, until: float, samples: list[float], errors: list[float]) -> None:
    while time.time() < until:
        began = time.perf_counter()
        response = await client.get("/healthz")
        samples.append(time.perf_counter() - began)
        errors.extend([1.0] if response.status_code != 200 else [])
        await asyncio.sleep(0.2)


async def dashboards(
    url: str, path: str, viewers: int, until: float, headers: dict[str, str], lockstep: bool
) -> dict[str, list[float]]:
    """``lockstep``: every viewer polls at the same instant (a burst of ``viewers`` requests every half second, a
    worst case); otherwise each starts at its own seeded random phase within the half second."""
    samples: dict[str, list[float]] = {"full": [], "increment": [], "healthz": [], "errors": [], "health_errors": []}
    limits = httpx.Limits(max_connections=viewers + 5)
    phases = np.zeros(viewers) if lockstep else np.random.default_rng(0).uniform(0, 0.5, viewers)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        await asyncio.gather(
            *(poll(client, path, BIG_ROUNDS, until, samples, float(phase)) for phase in phases),
            probe_health(client, until, samples["healthz"], samples["health_errors"]),
        )
    return samples


def auth_cost(settings: Settings, url: str, path: str, token: str, requests: int = 200) -> str:
    """What authentication adds to a request: the bearer-token lookup the API does first (SHA-256, one indexed
    query; last-used is written at most once a minute), timed in-process on the same PostgreSQL, beside the whole
    authenticated request over HTTP, interleaved so that drift hits both alike."""
    lookup, request = [], []
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30, headers=bearer) as client, session_factory(settings)() as session:
        for _ in range(requests):
            began = time.perf_counter()
            user, _why, _expires = accounts.token_user(session=session, secret=token)
            assert user is not None
            lookup.append(time.perf_counter() - began)
            session.rollback()
            began = time.perf_counter()
            client.get(path).raise_for_status()
            request.append(time.perf_counter() - began)
    share = float(np.median(lookup) / np.median(request))
    return (
        f"auth cost: token lookup p50 {pct(lookup, 50)} ms per request, of an authenticated GET {path} "
        f"p50 {pct(request, 50)} ms ({share:.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--round-every", type=float, default=2.0, help="seconds between rounds of the live run")
    parser.add_argument("--api-workers", type=int, default=1, help="API processes (FEDLENS_API_WORKERS)")
    parser.add_argument("--lockstep", action="store_true", help="all viewers poll at the same instant (worst case)")
    args = parser.parse_args()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fedlens_load WITH (FORCE)")
        conn.execute("CREATE DATABASE fedlens_load")
    upgrade(PG_LOAD)
    redis.Redis.from_url(REDIS_LOAD).flushdb()
    settings = Settings(database_url=PG_LOAD, broker_url=REDIS_LOAD)
    big = big_run(settings, BIG_CLIENTS, BIG_ROUNDS)
    live = live_run(settings, rounds=1000)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "FEDLENS_DATA_DIR": tmp,
            "FEDLENS_DATABASE_URL": PG_LOAD,
            "FEDLENS_BROKER_URL": REDIS_LOAD,
            "FEDLENS_STREAMS_PER_CALLER": str(args.streams + 10),  # every stream is the same user's
            "FEDLENS_REQUIRED_WORKERS": "[]",  # no workers here: /healthz checks the database and the broker
            "FEDLENS_API_WORKERS": str(args.api_workers),
        }
        stack = Stack(Path(tmp), env)
        try:
            stack.start_api()  # and makes an admin's API token with `fedlens token create`, as scripts do
            headers = {"Authorization": str(stack.http.headers["Authorization"])}
            report(stack.url, big, live, args, settings, headers)
        finally:
            stack.stop()


def report(
    url: str, big: str, live: str, args: argparse.Namespace, settings: Settings, headers: dict[str, str]
) -> None:
    ctx = mp.get_context("spawn")
    arrivals, written = ctx.Queue(), ctx.Queue()
    until = time.time() + args.seconds + 10  # streams open and settle for 10 s before the measurement
    streams = ctx.Process(target=watch_streams, args=(url, live, args.streams, until, arrivals, headers))
    streams.start()
    time.sleep(10)
    writer = ctx.Process(target=write_rounds, args=(settings, live, args.round_every, until, written))
    writer.start()
    path = f"/api/runs/{big}/rounds"
    httpx.get(
        f"{url}{path}", headers=headers, timeout=60
    )  # the first viewer of a run fills the cache; the others are measured
    samples = asyncio.run(dashboards(url, path, args.viewers, until, headers, args.lockstep))
    received, stream_errors = arrivals.get(timeout=120)
    streams.join(60)
    writer.join(60)
    out = dict(iter(written.get, None))
    delays = [at - out[number] for number, at in received if number in out]
    expected = len(out) * args.streams
    size = len(httpx.get(f"{url}{path}", headers=headers).content) / 1e3
    print(
        f"{args.viewers} viewers of a 10-client x 100-round run ({size:.0f} kB), "
        f"{'in lockstep' if args.lockstep else 'each at its own phase'}, {args.streams} event streams of a "
        f"live run storing a round every {args.round_every:.1f} s, {args.seconds:.0f} s"
    )
    print(latency("rounds full (gzip)", samples["full"]))
    print(latency("rounds increment (since)", samples["increment"]))
    print(latency("healthz", samples["healthz"]))
    print(
        f"event delivery delay: p50 {pct(delays, 50)} ms, p95 {pct(delays, 95)} ms "
        f"({len(delays)} of {expected} round events received)"
    )
    print(
        f"errors: rounds {len(samples['errors'])}, healthz {len(samples['health_errors'])}, streams {stream_errors}, "
        f"missing round events {expected - len(delays)}"
    )
    print(auth_cost(settings, url, f"/api/runs/{big}", headers["Authorization"].removeprefix("Bearer ")))


if __name__ == "__main__":
    main()
