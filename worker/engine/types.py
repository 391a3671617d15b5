"""Value types that cross the engine's boundaries: updates, statuses, metrics and round results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from worker.engine.thresholds import GridCounts

Weights = list[np.ndarray]


class ClientStatus(StrEnum):
    """What a client contributed to one round."""

    TRAINED = "trained"  # sent fresh weights this round
    KEPT = "kept"  # did not train; its last weights were reused (keep-last approach)
    ABSENT = "absent"  # not joined yet, left, or did not answer; does not count
    FAILED = "failed"  # was asked to train and its training raised an error


class ClientEvent(StrEnum):
    JOINED = "joined"
    LEFT = "left"


@dataclass(frozen=True)
class ClientUpdate:
    client_id: str
    weights: Weights
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientFailure:
    client_id: str
    error: str


@dataclass(frozen=True)
class ClientEvaluation:
    """The global model on one client's validation and own test parts, as grid counts (no predictions).
    ``startup_s``: the worker's one-off start-up (data, model, tracing) when this was its first task of the run,
    which the round counts as start-up, not as evaluation."""

    client_id: str
    validation: GridCounts
    test: GridCounts
    startup_s: float = 0.0


@dataclass(frozen=True)
class RocCurve:
    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


@dataclass(frozen=True)
class EvalMetrics:
    """Binary classification metrics of one model on one test set at its operating ``threshold``.

    ``auc_ci`` is the 95% DeLong interval of the AUC; ``confusion`` is (TN, FP, FN, TP) at the threshold.
    """

    loss: float
    accuracy: float
    auc: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    samples: int
    roc: RocCurve
    auc_ci: tuple[float, float] | None = None
    confusion: tuple[int, int, int, int] | None = None
    threshold: float = 0.5

    def scalars(self) -> dict[str, float]:
        values = {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "auc": self.auc,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "precision": self.precision,
            "f1": self.f1,
            "threshold": self.threshold,
        }
        if self.auc_ci is not None:
            values |= {"auc_ci_low": self.auc_ci[0], "auc_ci_high": self.auc_ci[1]}
        if self.confusion is not None:
            tn, fp, fn, tp = self.confusion
            values |= {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "n_negative": tn + fp, "n_positive": fn + tp}
        return values


@dataclass(frozen=True)
class ClientRound:
    """One client in one round: status, join/leave event and its own metrics when it trained."""

    client_id: str
    status: ClientStatus
    samples: int
    event: ClientEvent | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    roc: RocCurve | None = None  # the global model on the client's own test set, when it evaluated


@dataclass(frozen=True)
class RoundPrivacy:
    """The (epsilon, delta) a differentially private run has spent up to and including one round.

    ``epsilon`` is the run's: at client level the one guarantee of every site's contribution, at sample level the
    largest of the sites' own (``per_client``), each from dp-accounting's RDP accountant. ``clip_norm`` is the bound
    used in this round (adaptive clipping moves it).
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float
    per_client: Mapping[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        return {
            "privacy.epsilon": self.epsilon,
            "privacy.delta": self.delta,
            "privacy.noise_multiplier": self.noise_multiplier,
            "privacy.clip_norm": self.clip_norm,
        }


@dataclass(frozen=True)
class RoundResult:
    """Everything measured in one federated round (or one centralized epoch)."""

    round: int
    metrics: EvalMetrics
    clients: list[ClientRound]
    wall_s: float
    train_s: float  # slowest client's training (the clients train in parallel in a deployment)
    calibration_s: float  # slowest client's BatchNorm statistics pass
    aggregation_s: float
    evaluation_s: float
    bytes_sent: int  # server → clients
    bytes_received: int  # clients → server
    startup_s: float = 0.0  # slowest client's one-off start-up in this round: data, model build, tracing
    privacy: RoundPrivacy | None = None  # with differential privacy: the epsilon spent so far

    @property
    def critical_path_s(self) -> float:
        """The round's training work when clients train in parallel: slowest client + server work (start-up
        is its own part)."""
        return self.train_s + self.calibration_s + self.aggregation_s + self.evaluation_s
