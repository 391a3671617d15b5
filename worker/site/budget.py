"""The site's own privacy budget: a ledger of the epsilon each run spent on each dataset, checked before training."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from app.run_config import ModelConfig
from app.sites.protocol import DpSettings, SiteTask
from worker.engine.privacy.accounting import Ledger, PrivacyAccountant
from worker.site.datasets import SiteData, TaskRefused
from worker.site.identity import SiteError

LEDGER_FILE = "privacy.json"


@dataclass(frozen=True)
class DatasetBudget:
    """What the site set for one dataset in site.yaml, and the training examples sample-level DP is counted on."""

    max_epsilon: float | None
    delta: float | None
    train_examples: int


@dataclass(frozen=True)
class RunSpend:
    """One run on one dataset: the rounds the site trained (a retried round once per release) and their epsilon."""

    rounds: tuple[int, ...]
    epsilon: float
    delta: float


class PrivacyLedger:
    """privacy.json in the site's folder: per dataset, per run, what the site released. It outlives runs and
    restarts, and the site writes it itself, so the server cannot reset what a dataset has spent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spends: dict[str, dict[str, RunSpend]] = self._read()

    def _read(self) -> dict[str, dict[str, RunSpend]]:
        """Raises SiteError when the file is unreadable: deleting it would forget what was spent."""
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {
                dataset: {
                    run: RunSpend(tuple(s["rounds"]), float(s["epsilon"]), float(s["delta"])) for run, s in runs.items()
                }
                for dataset, runs in raw["datasets"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SiteError(f"cannot read the privacy ledger {self.path} ({error}); restore it from a backup") from None

    def run(self, dataset: str, run_id: str) -> RunSpend | None:
        return self.spends.get(dataset, {}).get(run_id)

    def others(self, dataset: str, run_id: str) -> list[RunSpend]:
        return [spend for run, spend in self.spends.get(dataset, {}).items() if run != run_id]

    def record(self, dataset: str, run_id: str, spend: RunSpend) -> None:
        self.spends.setdefault(dataset, {})[run_id] = spend
        self._write()

    def _write(self) -> None:
        """Write a new file, flush it to disk, then rename it over the old one: a crash leaves one or the other."""
        record = {
            "datasets": {
                dataset: {
                    run: {"rounds": list(s.rounds), "epsilon": s.epsilon, "delta": s.delta} for run, s in runs.items()
                }
                for dataset, runs in self.spends.items()
            }
        }
        partial = self.path.with_name(self.path.name + ".part")
        with partial.open("w") as file:
            file.write(json.dumps(record, indent=2) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path)


@lru_cache(maxsize=16)
def _accountant(
    level: str, noise_multiplier: float, batch_size: int, examples: int, local_epochs: int
) -> PrivacyAccountant:
    """The accountant the server's RunPrivacy uses for this site (worker/engine/protection.py), cached: building
    one computes an RDP curve."""
    if level == "client":
        return PrivacyAccountant.client_level(noise_multiplier)
    return PrivacyAccountant.sample_level(
        noise_multiplier, examples=examples, batch_size=batch_size, local_epochs=local_epochs
    )


#: steps that release no function of the images beyond counts: evaluation, and secure aggregation's keys and shares
RELEASES_NOTHING = ("evaluate", "advertise", "share", "unmask")


def run_epsilon(task: SiteTask, dp: DpSettings, budget: DatasetBudget, rounds: int) -> float:
    """Epsilon of ``rounds`` rounds of this task's run, as the site computes it from its own example count."""
    try:
        batch_size = ModelConfig.model_validate(task.settings.model).batch_size
    except ValidationError:
        raise TaskRefused("the task's settings are out of range: model") from None
    accountant = _accountant(
        dp.level, dp.noise_multiplier, batch_size, budget.train_examples, task.settings.local_epochs
    )
    return accountant.epsilon(rounds, budget.delta or dp.delta)


class SiteBudget:
    """Each dataset's ``max_epsilon`` against the ledger: the hospital, not the server, has the last word.

    Training rounds of DP runs are recorded for every dataset, so the spend is known before a budget is set. Under a
    budget a site refuses training without DP (its epsilon is unbounded), statistics tasks (BatchNorm moments
    leave without noise) and local baselines (metrics of a model trained here without noise); evaluation of a
    global model releases only confusion counts and is always allowed.
    """

    def __init__(self, folder: Path, datasets: Mapping[str, DatasetBudget]) -> None:
        self.ledger = PrivacyLedger(folder / LEDGER_FILE)
        self.datasets = datasets

    @classmethod
    def of(cls, data: SiteData, folder: Path) -> SiteBudget:
        """The budgets of the prepared datasets; the training examples are those of the site's own split."""
        return cls(
            folder,
            {
                name: DatasetBudget(p.declared.max_epsilon, p.declared.delta, len(p.parts["train"]))
                for name, p in data.prepared.items()
            },
        )

    def check(self, task: SiteTask) -> None:
        """Raises TaskRefused when the task would take its dataset past its budget (reaching it is allowed)."""
        budget = self.datasets.get(task.dataset)
        if budget is None or budget.max_epsilon is None or task.kind in RELEASES_NOTHING:
            return
        limit, dp = budget.max_epsilon, task.settings.dp
        has = f"dataset {task.dataset!r} has a privacy budget (max_epsilon {limit:g}) and"
        if task.kind == "statistics":
            raise TaskRefused(f"{has} a statistics task releases BatchNorm moments without noise: this site refuses it")
        if task.kind == "local":
            raise TaskRefused(
                f"{has} a local baseline trains without differential privacy and sends the metrics of that model, "
                "whose epsilon is unbounded: this site refuses it"
            )
        if dp is None:
            raise TaskRefused(
                f"{has} this run trains without differential privacy, whose epsilon is unbounded: "
                "this site refuses to train on it"
            )
        others = Ledger(limit)
        for spend in self.ledger.others(task.dataset, str(task.run_id)):
            others = others.charge(spend.epsilon)
        rounds = self._rounds_after(task)
        epsilon = run_epsilon(task, dp, budget, len(rounds))
        if others.would_exceed(epsilon):
            raise TaskRefused(
                f"dataset {task.dataset!r} would spend epsilon {others.spent + epsilon:.2f} of its {limit:g} budget "
                f"({others.spent:.2f} by other runs, {epsilon:.2f} by this run in {len(rounds)} "
                f"round{'s' if len(rounds) > 1 else ''}): "
                "this site refuses more training for this run"
            )

    def record(self, task: SiteTask) -> None:
        """Count a trained round of a DP run, again when a task is retried: DP-SGD draws fresh secret noise each
        time, so a retry is a second release. Called before the update leaves the site, so that a crash can
        overstate the spend but never understate it."""
        budget, dp = self.datasets.get(task.dataset), task.settings.dp
        if task.kind != "train" or budget is None or dp is None:
            return
        rounds = self._rounds_after(task)
        delta = budget.delta or dp.delta
        spend = RunSpend(rounds, run_epsilon(task, dp, budget, len(rounds)), delta)
        self.ledger.record(task.dataset, str(task.run_id), spend)

    def _rounds_after(self, task: SiteTask) -> tuple[int, ...]:
        spent = self.ledger.run(task.dataset, str(task.run_id))
        return tuple(sorted([*(spent.rounds if spent else ()), task.round]))
