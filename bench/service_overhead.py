"""Service overhead: one federated experiment through API → broker → workers → database vs the engine in-process.

Runs the same experiment (same data, clients, rounds, seed) both ways, in ABBA order, on the embedded default
(SQLite + private Redis) and on this machine's PostgreSQL + Redis; both sides are warmed up first (model
built and traced, data loaded). A service run is timed from the POST that launches it to the end of its
event stream, as a script sees it. Each run prints where its time went (summed per-round phases).
Then measures the latency of GET /api/runs/{id}/rounds for a run of 10 clients x 100 rounds, alone and
with 50 concurrent readers while a run trains.
Prints service_overhead_ratio=<median service / median in-process> last (the PostgreSQL + Redis figure).
Usage: python -m bench.service_overhead [--repeats 3] [--rounds 3] [--samples 1200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import redis

from app.db import session_factory
from app.embedded import EmbeddedRedis
from app.migrate import upgrade
from app.models import Experiment, Run, RunKind
from app.run_config import RunConfig
from app.settings import Settings
from bench.common import kermany_sample
from tests.e2e.stack import Stack
from worker.engine.executor import InProcessExecutor
from worker.engine.experiment import INIT, derive_seed, prepare, presence_for
from worker.engine.loop import run_federated
from worker.engine.strategy import strategy_for
from worker.engine.types import ClientRound, ClientStatus, EvalMetrics, RocCurve, RoundResult
from worker.local_run import PhaseLog
from worker.store import save_round

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH = "postgresql+psycopg://postgres@127.0.0.1:5432/fedlens_bench"
REDIS_BENCH = "redis://127.0.0.1:6379/13"


def experiment_config(npz: Path, rounds: int) -> dict[str, Any]:
    return {
        "name": "overhead",
        "seed": 11,
        "data": {"train": {"format": "npz", "path": str(npz)}, "image_size": 64},
        "federation": {"clients": 3, "rounds": rounds},
        "centralized": {"enabled": False},
    }


def in_process(cfg: RunConfig, folder: Path) -> float:
    from worker.context import context_for

    ctx = context_for(cfg, roots=None)  # cached: the second call reuses the traced model, as a warm worker does
    fed, trainer = ctx.federation, ctx.trainer
    clients = {c.client_id: c for c in fed.clients}
    started = time.perf_counter()
    run_federated(
        cfg,
        InProcessExecutor(trainer, clients, seed=cfg.seed, local_epochs=1, class_weight=fed.class_weight(cfg)),
        lambda w, threshold: trainer.evaluate(w, fed.test, threshold),
        initial=trainer.initial_weights(derive_seed(cfg.seed, INIT)),
        strategy=strategy_for("drop"),
        presence=presence_for(cfg),
        samples={cid: len(c.train) for cid, c in clients.items()},
        batchnorm_slots=trainer.batchnorm_slots,
        on_round=PhaseLog(folder).append,
    )
    return time.perf_counter() - started


def phases(rounds: list[dict[str, Any]]) -> str:
    """Summed per-round seconds: where a run's time went."""
    keys = ("wall_s", "train_s", "calibration_s", "aggregation_s", "evaluation_s")
    fits = sum(c["metrics"].get("train.seconds", 0.0) for r in rounds for c in r["clients"])
    return " ".join(f"{k[:-2]} {sum(r[k] for r in rounds):.2f}" for k in keys) + f" all-fits {fits:.2f}"


@dataclass(frozen=True)
class Followed:
    """A run launched and watched to its end."""

    run: dict[str, Any]  # GET /api/runs/{id} once it ended
    elapsed_s: float  # from the POST that launched it to the end of its event stream
    rounds: list[dict[str, Any]]  # the round events' data (RoundRead)
    arrived: dict[int, datetime]  # when each round's event reached this process


def follow(stack: Stack, config: dict[str, Any]) -> Followed:
    """Launch a federated run and watch it as a script would, over server-sent events: polling the API fast enough
    to time a run would itself take CPU from the training it measures. Exits, with the logs, unless it succeeded."""
    started = time.perf_counter()
    run_id = stack.launch(config)["federated"]["id"]
    rounds, arrived = [], {}
    for kind, data in stack.events(run_id, timeout_s=900):
        if kind == "round":
            arrived[data["number"]] = datetime.now(UTC)
            rounds.append(data)
        elif kind == "end":
            break
    elapsed = time.perf_counter() - started
    done = stack.run(run_id)
    if done["status"] != "succeeded":
        raise SystemExit(f"run {run_id} failed: {done['error']}\n{stack.logs()}")
    return Followed(done, elapsed, rounds, arrived)


def through_service(stack: Stack, config: dict[str, Any], report: bool = False) -> float:
    followed = follow(stack, config)
    if report:
        at = {k: datetime.fromisoformat(followed.run[k]) for k in ("created_at", "started_at", "finished_at")}
        elapsed = followed.elapsed_s
        print(
            f"    service {elapsed:.2f} s; queued {(at['started_at'] - at['created_at']).total_seconds():.2f} s, "
            f"claimed to finished {(at['finished_at'] - at['started_at']).total_seconds():.2f} s, "
            f"rounds: {phases(followed.rounds)}"
        )
    return followed.elapsed_s


def fake_round(rnd: int, clients: int) -> RoundResult:
    roc = RocCurve(list(np.linspace(0, 1, 200)), list(np.linspace(0, 1, 200) ** 0.3), list(np.linspace(1, 0, 200)))
    metrics = EvalMetrics(0.3, 0.9, 0.95, 0.9, 0.9, 0.9, 0.9, 1000, roc)
    rows = [
        ClientRound(
            str(c),
            ClientStatus.TRAINED,
            500,
            None,
            {"train.loss": 0.2, "train.accuracy": 0.9, "test.loss": 0.3, "test.accuracy": 0.88, "train.seconds": 4.0},
        )
        for c in range(1, clients + 1)
    ]
    return RoundResult(rnd, metrics, rows, 10.0, 4.0, 1.0, 0.1, 0.5, 10**7, 10**7)


def big_run(settings: Settings, clients: int = 10, rounds: int = 100) -> str:
    """A finished run of ``clients`` x ``rounds`` written as the worker writes it."""
    cfg = RunConfig.model_validate({"federation": {"clients": clients, "rounds": rounds}})
    with session_factory(settings)() as session:
        experiment = Experiment(name="latency", config=cfg.model_dump(mode="json"))
        run = Run(experiment=experiment, kind=RunKind.FEDERATED, seed=1, total_rounds=rounds)
        session.add(run)
        session.commit()
        for rnd in range(1, rounds + 1):
            save_round(session, run.id, fake_round(rnd, clients), "none")
        return str(run.id)


def latencies(url: str, path: str, readers: int, seconds: float) -> list[float]:
    """Per-request seconds of ``readers`` threads reading ``path`` in a loop for ``seconds`` (bounded)."""
    samples: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def read() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(10_000):
                if time.monotonic() > stop_at:
                    return
                began = time.perf_counter()
                assert client.get(path).status_code == 200
                with lock:
                    samples.append(time.perf_counter() - began)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q) * 1000)


def measure(
    name: str, env: dict[str, str], settings: Settings, config: dict[str, Any], repeats: int, tmp: Path
) -> float:
    folder = tmp / f"stack-{name}"
    folder.mkdir()
    stack = Stack(folder, env)
    try:
        stack.start_api()
        stack.start_worker("runs")
        stack.start_worker("train")
        cfg = RunConfig.model_validate(config)
        through_service(stack, config)  # warm-up: workers load the data and trace the model
        in_process(cfg, folder / "warm")
        service_s, local_s = [], []

        def local(rep: int, half: int) -> None:
            run_folder = folder / f"local-{rep}-{half}"
            local_s.append(in_process(cfg, run_folder))
            print(f"    in-process {local_s[-1]:.2f} s; rounds: {phases(PhaseLog(run_folder).records())}")

        def service() -> None:
            service_s.append(through_service(stack, config, report=True))

        for rep in range(repeats):  # ABBA order: a drift in machine speed hits both sides alike
            print(f"  {name} repeat {rep + 1}", flush=True)
            service()
            local(rep, 1)
            local(rep, 2)
            service()
        ratio = statistics.median(service_s) / statistics.median(local_s)
        print(
            f"{name}: {len(service_s)} runs each; median service {statistics.median(service_s):.2f} s, "
            f"in-process {statistics.median(local_s):.2f} s, ratio {ratio:.3f}; "
            f"fastest service {min(service_s):.2f} s, in-process {min(local_s):.2f} s, "
            f"ratio {min(service_s) / min(local_s):.3f}",
            flush=True,
        )
        run_id = big_run(settings)
        path = f"/api/runs/{run_id}/rounds"
        alone = latencies(stack.url, path, readers=1, seconds=10)
        print(
            f"{name}: GET rounds (10 clients x 100 rounds, {len(stack.http.get(path).content) / 1e3:.0f} kB) "
            f"alone: p50 {pct(alone, 50):.0f} ms, p95 {pct(alone, 95):.0f} ms ({len(alone)} requests)"
        )
        training = threading.Thread(target=through_service, args=(stack, config))
        training.start()
        time.sleep(1)
        loaded = latencies(stack.url, path, readers=50, seconds=15)
        training.join()
        print(
            f"{name}: GET rounds with 50 concurrent readers during training: p50 {pct(loaded, 50):.0f} ms, "
            f"p95 {pct(loaded, 95):.0f} ms ({len(loaded)} requests, {len(loaded) / 15:.1f} req/s)"
        )
        return ratio
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="ABBA blocks: each gives 2 runs per side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1200)
    args = parser.parse_args()
    images, labels = kermany_sample(args.samples)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        npz = tmp / "subset.npz"
        np.savez(npz, images=images, labels=labels)
        config = experiment_config(npz, args.rounds)
        prepare(RunConfig.model_validate(config))  # fail early on bad data
        print(
            f"{args.samples} Kermany images at 64x64, 3 clients, {args.rounds} rounds; 1 orchestrator and 1 "
            f"training worker (clients train one after another, as in-process)"
        )
        data = tmp / "embedded"
        with EmbeddedRedis(data / "redis.sock", data):
            database = f"sqlite:///{data / 'fedlens.db'}"
            upgrade(database)
            broker = f"redis+socket://{data / 'redis.sock'}"
            env = {"FEDLENS_DATA_DIR": str(data), "FEDLENS_DATABASE_URL": database, "FEDLENS_BROKER_URL": broker}
            env["FEDLENS_DATA_ROOTS"] = str(tmp)  # the subset it trains on
            embedded = measure(
                "embedded", env, Settings(database_url=database, broker_url=broker), config, args.repeats, tmp
            )
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS fedlens_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE fedlens_bench")
        upgrade(PG_BENCH)
        redis.Redis.from_url(REDIS_BENCH).flushdb()
        env = {"FEDLENS_DATA_DIR": str(tmp / "pg"), "FEDLENS_DATABASE_URL": PG_BENCH, "FEDLENS_BROKER_URL": REDIS_BENCH}
        env["FEDLENS_DATA_ROOTS"] = str(tmp)
        postgres = measure(
            "postgres-redis", env, Settings(database_url=PG_BENCH, broker_url=REDIS_BENCH), config, args.repeats, tmp
        )
    print(f"service_overhead_ratio_embedded={embedded:.3f}")
    print(f"service_overhead_ratio={postgres:.3f}")


if __name__ == "__main__":
    main()
