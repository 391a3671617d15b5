"""Site overhead: one federation trained by three site agents over loopback HTTPS, and by the engine in-process.

    python -m bench.sites [--repeat 2] [--images 1200] [--rounds 3]

Both sides run the same federation: 3 clients, ``--rounds`` rounds of 1 local epoch, batch 32, seed 11, the study's
CNN at 64 px. After one untimed warm-up run of each side (models built and traced, data read), the runs alternate
in ABBA order (sites, in-process, in-process, sites), ``--repeat`` such blocks:
  sites       the API over HTTPS (a certificate from fedlens' own CA) on PostgreSQL, an orchestrator worker on a
              private Redis, and three ``fedlens site run`` agents enrolled with the certificate's fingerprint. A run
              is timed from the POST that launches it to the end of its event stream, as a script sees it.
  in-process  worker.engine.loop.run_federated with the in-process executor and one warm model (bench.overhead),
              timed around run_federated.
Data: ``--images`` images of kermany_train_64.npz (drawn with seed 0), cut into three disjoint parts, each written
as an image folder (NORMAL/, PNEUMONIA/) that one agent serves. Each site splits its part 70/10/20 (train /
validation / test) with its own seed from its site.yaml; the in-process clients are those very splits, read by the
agents' own loader (worker.site.datasets.SiteData), so both sides train and evaluate the same arrays. Neither side
has a server-held test set: the global model is evaluated on the clients' test parts, pooled as grid counts.

Output: a line per run with its wall and CPU seconds and where its time went (summed per-round phases), a table of
both modes (median and fastest run, median CPU seconds, median round, final AUC: the two AUCs should agree), the
sites' CPU seconds by process, then for the timed sites runs the bytes per round on the wire, the task round trips,
and the delay from a site's upload to the round's event on the dashboard's stream. The agents train at the same
time, the in-process clients one after another: on a machine shared with other work the three agents also get a
larger share of the CPU, so read the CPU ratio beside the wall-time one. The last line is
``site_overhead_ratio=<median sites run / median in-process run>`` (wall time).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import yaml

from app.embedded import EmbeddedRedis
from app.migrate import upgrade
from app.run_config import RunConfig
from bench.common import kermany_sample
from bench.service_overhead import follow, phases
from bench.site_traffic import SitesTiming, report_sites
from tests.e2e.stack import Stack, wait_for
from tests.services import database_name, drop_database, ensure_database, postgres_url
from tests.site.images import save_image_folder
from worker.engine.aggregate import balanced_class_weight
from worker.engine.client import KerasTrainer
from worker.engine.executor import InProcessExecutor
from worker.engine.experiment import INIT, derive_seed, presence_for
from worker.engine.loop import run_federated
from worker.engine.metrics import pooled_metrics
from worker.engine.protection import moments_pooling, strategy_with_privacy
from worker.engine.thresholds import GridCounts, empty_counts
from worker.engine.types import ClientEvaluation, EvalMetrics, Weights
from worker.local_run import PhaseLog
from worker.site.datasets import SiteData, site_config

SITES = ("hospital-a", "hospital-b", "hospital-c")
SEED = 11
SPLIT = {"validation": 0.1, "test": 0.2}
DATABASE = database_name("fedlens_bench_sites")  # FEDLENS_TEST_SLOT gives each checkout its own


@dataclass(frozen=True)
class SiteFiles:
    name: str
    images: Path  # the image folder its agent serves
    config: Path  # its site.yaml: the split's fractions and seed


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_by: dict[str, float]  # user + system seconds of each process of the side (PostgreSQL's not counted)
    rounds_s: list[float]
    auc: float
    phases: str

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by.values())


def experiment_config(rounds: int) -> dict[str, Any]:
    return {
        "name": "bench-sites",
        "seed": SEED,
        "data": {"image_size": 64},
        "model": {"batch_size": 32},
        "federation": {
            "rounds": rounds,
            "local_epochs": 1,
            "sites": [{"site": site, "dataset": "chest"} for site in SITES],
            "min_sites": len(SITES),
            "round_timeout_s": 900,
        },
    }


def write_sites(root: Path, images: np.ndarray, labels: np.ndarray) -> list[SiteFiles]:
    """Three disjoint parts of the sample, each an image folder with a site.yaml that fixes its split."""
    order = np.random.default_rng(SEED).permutation(len(labels))
    sites = []
    for i, (name, part) in enumerate(zip(SITES, np.array_split(order, len(SITES)), strict=True)):
        folder = save_image_folder(root / f"{name}-images", images[part], labels[part], part)
        config = root / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"split": SPLIT | {"seed": SEED + i}}))
        sites.append(SiteFiles(name, folder, config))
    return sites


class PooledEvaluation(InProcessExecutor):
    """In-process clients evaluated as sites are: the global model on their own test parts, pooled as counts."""

    pooled: GridCounts | None = None

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        evaluations = super().evaluate(rnd, weights, client_ids)
        self.pooled = sum((e.test for e in evaluations), empty_counts()) if evaluations else None
        return evaluations

    def metrics(self, _weights: Weights, threshold: float) -> EvalMetrics:
        if self.pooled is None:
            raise RuntimeError("no client evaluated the global model this round")
        return pooled_metrics(self.pooled, threshold)


class InProcess:
    """The same federation in this process: client i holds site i's own split, and one warm model trains all."""

    def __init__(self, cfg: RunConfig, sites: Sequence[SiteFiles], folder: Path) -> None:
        clients = []
        for number, site in enumerate(sites, start=1):
            (folder / site.name).mkdir(parents=True)
            data = SiteData(site_config(site.config, [f"chest=image-folder:{site.images}"]), folder / site.name)
            data.prepare()
            clients.append(data.client_data("chest", cfg.data.image_size, str(number)))
        self.cfg, self.clients = cfg, {c.client_id: c for c in clients}
        counts = [np.bincount(c.train.labels, minlength=2) for c in clients]
        self.class_weight = balanced_class_weight([(int(n[0]), int(n[1])) for n in counts])  # as the sites' counts
        self.trainer = KerasTrainer(cfg.data.image_size, cfg.model)
        self.trainer.warm_up(self.class_weight)

    def run(self, folder: Path) -> Timed:
        cfg, trainer = self.cfg, self.trainer
        samples = {cid: len(c.train) for cid, c in self.clients.items()}
        executor = PooledEvaluation(
            trainer, self.clients, seed=cfg.seed, local_epochs=1, class_weight=self.class_weight
        )
        strategy = strategy_with_privacy(cfg, len(samples))
        log = PhaseLog(folder)
        started, cpu = time.perf_counter(), time.process_time()
        run_federated(
            cfg,
            executor,
            executor.metrics,
            initial=trainer.initial_weights(derive_seed(cfg.seed, INIT)),
            strategy=strategy,
            presence=presence_for(cfg),
            samples=samples,
            batchnorm_slots=trainer.batchnorm_slots,
            on_round=log.append,
            pool_moments=moments_pooling(strategy),
        )
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        records = log.records()
        auc = records[-1]["metrics"]["auc"]
        return Timed(elapsed, {"this process": cpu}, [r["wall_s"] for r in records], auc, phases(records))


def start_federation(folder: Path, sites: Sequence[SiteFiles], broker: str) -> Stack:
    """API over HTTPS and an orchestrator on a fresh database, and one enrolled agent per site, all online."""
    ensure_database(DATABASE, fresh=True)
    upgrade(postgres_url(DATABASE))
    env = {"FEDLENS_DATA_DIR": str(folder / "server"), "FEDLENS_DATABASE_URL": postgres_url(DATABASE)}
    stack = Stack(folder, env | {"FEDLENS_BROKER_URL": broker})
    try:
        stack.start_api(tls=True)
        stack.start_worker("runs")
        for site in sites:
            stack.start_site(site.name, site.images, site.config)
        wait_for(lambda: stack.sites_online() == set(SITES), 300, "the agents' first heartbeats")
    except BaseException:
        stack.stop()
        raise
    return stack


def cpu_seconds(processes: Mapping[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process (name: pid) has used so far, its reaped children's included, and this
    process's (it watches the event stream)."""
    used = {}
    for name, pid in processes.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return used | {"this process": time.process_time()}


def through_sites(stack: Stack, config: dict[str, Any], processes: Mapping[str, int]) -> tuple[Timed, SitesTiming]:
    """``processes``: the deployment's (API, orchestrator, agents, Redis) by name, whose CPU time the run counts."""
    before = cpu_seconds(processes)
    followed = follow(stack, config)
    cpu = {name: used - before[name] for name, used in cpu_seconds(processes).items()}
    rounds, elapsed = followed.rounds, followed.elapsed_s
    timed = Timed(elapsed, cpu, [r["wall_s"] for r in rounds], rounds[-1]["metrics"]["test.auc"], phases(rounds))
    stored = {r["number"]: datetime.fromisoformat(r["finished_at"]) for r in rounds}
    return timed, SitesTiming(followed.run["id"], followed.arrived, stored)


def summary(runs: Sequence[Timed]) -> str:
    """Runs, median and fastest run, median CPU seconds, median round, median final AUC."""
    walls, rounds = [r.wall_s for r in runs], [s for r in runs for s in r.rounds_s]
    median, per_round, auc = statistics.median(walls), statistics.median(rounds), statistics.median(r.auc for r in runs)
    cpu = statistics.median(r.cpu_s for r in runs)
    return f"{len(runs):>4} {median:>9.2f} {min(walls):>10.2f} {cpu:>7.1f} {per_round:>8.2f} {auc:>6.3f}"


def interleaved(
    stack: Stack, processes: Mapping[str, int], local: InProcess, config: dict[str, Any], repeat: int, tmp: Path
) -> None:
    through_sites(stack, config, processes)  # warm-up: each agent traces its model, the orchestrator builds its context
    local.run(tmp / "warm-up")
    sites: list[Timed] = []
    in_process: list[Timed] = []
    timings: list[SitesTiming] = []
    for block in range(repeat):  # ABBA: a drift in the machine's speed hits both sides alike
        for side in ("sites", "in-process", "in-process", "sites"):
            if side == "sites":
                timed, timing = through_sites(stack, config, processes)
                sites.append(timed)
                timings.append(timing)
            else:
                in_process.append(local.run(tmp / f"local-{len(in_process)}"))
                timed = in_process[-1]
            took = f"{timed.wall_s:6.2f} s, cpu {timed.cpu_s:6.1f} s"
            print(f"  block {block + 1} {side:<10} {took}; rounds: {timed.phases}", flush=True)
    print(f"\n{'mode':<11} {'runs':>4} {'median s':>9} {'fastest s':>10} {'cpu s':>7} {'s/round':>8} {'AUC':>6}")
    for name, runs in (("in-process", in_process), ("sites", sites)):
        print(f"{name:<11} {summary(runs)}")
    by_process = {name: statistics.median(r.cpu_by[name] for r in sites) for name in sites[0].cpu_by}
    print("cpu s per sites run (median): " + ", ".join(f"{name} {used:.1f}" for name, used in by_process.items()))
    report_sites(stack, timings)
    cpu = statistics.median(r.cpu_s for r in sites) / statistics.median(r.cpu_s for r in in_process)
    print(f"cpu ratio {cpu:.2f} (sites / in-process, median CPU seconds of every process of a side but PostgreSQL)")
    ratio = statistics.median(r.wall_s for r in sites) / statistics.median(r.wall_s for r in in_process)
    print(f"site_overhead_ratio={ratio:.2f}")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: processes stopped, folders removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="ABBA blocks: each gives 2 timed runs per side")
    parser.add_argument("--images", type=int, default=1200, help="images of kermany_train_64.npz, split over 3 sites")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    config = experiment_config(args.rounds)
    print(
        f"{args.images} Kermany images at 64 px over {len(SITES)} sites (each splits its part 70/10/20), "
        f"{args.rounds} rounds of 1 local epoch, batch 32; {args.repeat} ABBA block(s) after a warm-up run of each"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as tmp_name:
        tmp = Path(tmp_name)
        sites = write_sites(tmp / "hospitals", *kermany_sample(args.images))
        local = InProcess(RunConfig.model_validate(config), sites, tmp / "in-process")
        broker = tmp / "redis"
        with EmbeddedRedis(broker / "redis.sock", broker) as redis:
            try:
                stack = start_federation(tmp, sites, f"redis+socket://{broker / 'redis.sock'}")
                try:
                    assert redis.process is not None  # started by the with
                    processes = {name: p.pid for name, p in stack.processes.items()} | {"redis": redis.process.pid}
                    interleaved(stack, processes, local, config, args.repeat, tmp)
                finally:
                    stack.stop()
            finally:
                drop_database(DATABASE)


if __name__ == "__main__":
    main()
