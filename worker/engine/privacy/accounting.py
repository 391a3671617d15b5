"""Epsilon of differentially private rounds with dp-accounting's Rényi-DP accountant, and a dataset's budget."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import dp_accounting
import numpy as np
from dp_accounting import rdp

from worker.engine.privacy.dpsgd import sampling_rate, steps_per_epoch

#: dp-accounting warns, on every call at small noise, that it leaves out orders whose series does not converge;
#: leaving orders out can only raise epsilon, so the warnings are safe to silence (they flooded worker logs)
logging.getLogger("absl").setLevel(logging.ERROR)

DEFAULT_DELTA = 1e-5
NOISE_TOLERANCE = 1e-4  # noise_for_epsilon stops within this of the smallest sufficient noise multiplier


def steps_per_round(examples: int, batch_size: int, local_epochs: int) -> int:
    """DP-SGD steps a site takes in one round: ``E * ceil(n / B)``, E epochs of ``dpsgd.steps_per_epoch`` Poisson
    batches, exactly what KerasTrainer's DP-SGD takes. Raises ValueError for a count below 1."""
    if min(examples, batch_size, local_epochs) < 1:
        raise ValueError(
            f"examples, batch size and local epochs must be at least 1, got {examples}, {batch_size}, {local_epochs}"
        )
    return local_epochs * steps_per_epoch(examples, batch_size)


def dp_event(
    noise_multiplier: float, rounds: int, *, sampling_rate: float = 1.0, steps_per_round: int = 1
) -> dp_accounting.DpEvent:
    """``rounds`` rounds of ``steps_per_round`` Gaussian steps each, Poisson-subsampled at ``sampling_rate`` (a plain
    Gaussian mechanism at rate 1): the event every ε in this module is computed from."""
    step: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate != 1.0:
        step = dp_accounting.PoissonSampledDpEvent(sampling_rate, step)
    return dp_accounting.SelfComposedDpEvent(step, steps_per_round * rounds)


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")


class PrivacyAccountant:
    """ε of one Gaussian mechanism repeated round after round, by the RDP accountant of dp-accounting (Mironov, 2017;
    Mironov, Talwar & Zhang, 2019 for Poisson subsampling), under add-or-remove-one neighbouring.

    The RDP curve of one step is computed once (tens of ms); RDP composes by adding curves order by order, so ε after
    r rounds scales that curve by ``steps_per_round * r`` and converts it, in about 0.1 ms. The result is bit for bit
    what ``dp_accounting.rdp.RdpAccountant().compose(dp_event(...)).get_epsilon(delta)`` returns.
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float = 1.0, steps_per_round: int = 1) -> None:
        if not 0 < noise_multiplier < math.inf:
            raise ValueError(f"noise multiplier must be positive and finite, got {noise_multiplier}")
        if not 0 < sampling_rate <= 1:
            raise ValueError(f"sampling rate must lie in (0, 1], got {sampling_rate}")
        if steps_per_round < 1:
            raise ValueError(f"steps per round must be at least 1, got {steps_per_round}")
        self.noise_multiplier = noise_multiplier
        self.sampling_rate = sampling_rate
        self.steps_per_round = steps_per_round
        unit = rdp.RdpAccountant().compose(dp_event(noise_multiplier, 1, sampling_rate=sampling_rate))
        self._orders: np.ndarray = unit.orders
        self._step_rdp: np.ndarray = unit.rdp

    @classmethod
    def client_level(cls, noise_multiplier: float, sampling_rate: float = 1.0) -> PrivacyAccountant:
        """DP-FedAvg (McMahan et al., ICLR 2018): a round is one Gaussian mechanism on the clipped mean of the site
        updates and the record is a whole site; ``sampling_rate`` is the expected fraction of sites per round."""
        return cls(noise_multiplier, sampling_rate)

    @classmethod
    def sample_level(
        cls, noise_multiplier: float, *, examples: int, batch_size: int, local_epochs: int = 1
    ) -> PrivacyAccountant:
        """DP-SGD at one site (Abadi et al., CCS 2016): the record is one example, sampled at q = B / n (1 when the
        batch holds the whole site), ``steps_per_round(n, B, E)`` steps a round. Count only the rounds in which the
        site trained. The accountant assumes Poisson sampling; shuffled fixed-size batches are the usual stand-in (as
        in TF Privacy's compute_dp_sgd_privacy) but not formally covered by it (Chua et al., ICML 2024)."""
        steps = steps_per_round(examples, batch_size, local_epochs)
        return cls(noise_multiplier, sampling_rate(batch_size, examples), steps)

    def event(self, rounds: int) -> dp_accounting.DpEvent:
        return dp_event(
            self.noise_multiplier, rounds, sampling_rate=self.sampling_rate, steps_per_round=self.steps_per_round
        )

    def epsilon(self, rounds: int, delta: float = DEFAULT_DELTA) -> float:
        """ε after ``rounds`` rounds at ``delta`` (0 after none)."""
        if rounds < 0:
            raise ValueError(f"rounds must be non-negative, got {rounds}")
        _check_delta(delta)
        if rounds == 0:  # not 0 * inf = NaN at orders where dp-accounting found no finite RDP
            return 0.0
        epsilon, _ = rdp.compute_epsilon(self._orders, self.steps_per_round * rounds * self._step_rdp, delta)
        return float(epsilon)

    def rounds_within(self, target_epsilon: float, delta: float = DEFAULT_DELTA) -> int:
        """The most rounds whose ε stays at or below ``target_epsilon``: a run stops before the round that would
        exceed it. Doubling, then bisection, as ε grows with the rounds."""
        if target_epsilon < 0:
            raise ValueError(f"target epsilon must be non-negative, got {target_epsilon}")
        within, beyond = 0, 1
        while self.epsilon(beyond, delta) <= target_epsilon:
            within, beyond = beyond, 2 * beyond
        while beyond - within > 1:
            middle = (within + beyond) // 2
            if self.epsilon(middle, delta) <= target_epsilon:
                within = middle
            else:
                beyond = middle
        return within


def noise_for_epsilon(
    target_epsilon: float,
    rounds: int,
    delta: float = DEFAULT_DELTA,
    *,
    sampling_rate: float = 1.0,
    steps_per_round: int = 1,
) -> float:
    """The smallest noise multiplier (to within NOISE_TOLERANCE) whose ε after ``rounds`` rounds is at most
    ``target_epsilon``. dp-accounting's calibrate_dp_mechanism brackets it, bisects it with Brent's method and
    guarantees the side: the result never gives more than ``target_epsilon``. Sample level: pass
    ``sampling_rate=B/n`` and ``steps_per_round(n, B, E)``."""
    if target_epsilon <= 0 or rounds < 1:
        raise ValueError(f"need a positive target epsilon and at least one round, got {target_epsilon}, {rounds}")
    _check_delta(delta)
    noise = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda z: dp_event(z, rounds, sampling_rate=sampling_rate, steps_per_round=steps_per_round),
        target_epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(NOISE_TOLERANCE, 1.0),
        tol=NOISE_TOLERANCE,
    )
    return float(noise)


def would_exceed(spent: float, next_epsilon: float, max_epsilon: float) -> bool:
    """Whether spending ``next_epsilon`` more takes a budget past ``max_epsilon`` (reaching it exactly is allowed)."""
    return spent + next_epsilon > max_epsilon


@dataclass(frozen=True)
class Ledger:
    """One hospital dataset's privacy budget across runs, by basic sequential composition: runs that are each
    (ε_i, δ)-DP on the same data are together (Σ ε_i, k δ)-DP, even when each run is chosen after seeing the last
    (Dwork & Roth, 2014, Thm 3.16; Dwork, Rothblum & Vadhan, 2010). Summing overstates the loss (composing the runs'
    RDP curves would give less) but needs only each past run's ε, whatever its mechanism or level, and never
    understates it. Every run is accounted at the ledger's δ, so the δs add up to ``runs * delta``."""

    max_epsilon: float
    delta: float = DEFAULT_DELTA
    spent: float = 0.0
    runs: int = 0

    @property
    def spent_delta(self) -> float:
        return self.runs * self.delta

    @property
    def remaining(self) -> float:
        return max(0.0, self.max_epsilon - self.spent)

    def would_exceed(self, next_epsilon: float) -> bool:
        return would_exceed(self.spent, next_epsilon, self.max_epsilon)

    def charge(self, epsilon: float) -> Ledger:
        """The ledger after a run that spent ``epsilon`` at ``delta``. Recorded even past the budget: what was spent
        was spent, and refusing to record it would understate the loss; would_exceed is the check before a run."""
        if epsilon < 0:
            raise ValueError(f"a run cannot spend a negative epsilon, got {epsilon}")
        return replace(self, spent=self.spent + epsilon, runs=self.runs + 1)
