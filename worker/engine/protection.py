"""A run's privacy around the FedAvg loop: secure aggregation and DP-FedAvg as strategies, each round's epsilon.

The maths lives in ``worker.engine.privacy``; this module reads the run's config and keeps the per-run state (the
adaptive clip norm, the rounds each site has spent) that a checkpoint must carry.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from app.run_config import DpConfig, RunConfig
from worker.engine.loop import PoolMoments, pool_in_clear
from worker.engine.privacy.accounting import PrivacyAccountant
from worker.engine.privacy.dpfedavg import AdaptiveClipping, ClientLevelDP, clip, with_distributed_noise
from worker.engine.privacy.dpsgd import DpSgdSettings
from worker.engine.privacy.masking import SecAggParams, flatten, unflatten
from worker.engine.privacy.secagg import secure_mean
from worker.engine.strategy import Aggregate, Strategy, strategy_for
from worker.engine.types import ClientStatus, ClientUpdate, RoundPrivacy, Weights

#: the strategy state entry that carries the adaptive clip norm through a checkpoint
CLIP_NORM_STATE = "dp.clip_norm"


def noise_source() -> np.random.Generator:
    """A generator seeded from the OS's CSPRNG, fresh for every round: DP noise that anyone could regenerate from
    the run's (visible) seed could be subtracted again, so unlike everything else in a run it is not reproducible."""
    return np.random.default_rng(secrets.randbits(128))


class ClientDpFedAvg:
    """DP-FedAvg (McMahan et al., ICLR 2018): each site's change clipped to ``clip_norm`` and their unweighted mean
    noised, through ``privacy.dpfedavg.ClientLevelDP``. Sites weigh equally, so one site moves the model by at most
    ``clip_norm / m`` whatever its size."""

    def __init__(self, dp: ClientLevelDP) -> None:
        self.dp = dp

    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        if not updates:
            return None
        if current is None:
            raise ValueError("DP-FedAvg clips each site's change: it needs the weights the round started from")
        weights = self.dp.aggregate(current, [(u.weights, u.num_examples) for u in updates], noise_source())
        return Aggregate(weights, {u.client_id: ClientStatus.TRAINED for u in updates})

    def state(self) -> list[ClientUpdate]:
        return [ClientUpdate(CLIP_NORM_STATE, [np.array([self.dp.state()])], 0)]

    def restore(self, state: Sequence[ClientUpdate]) -> None:
        for entry in state:
            if entry.client_id != CLIP_NORM_STATE:
                raise ValueError("the checkpoint's strategy state is not DP-FedAvg's")
            self.dp.restore(float(entry.weights[0][0]))


def _floats(weights: Weights) -> list[int]:
    return [i for i, w in enumerate(weights) if np.issubdtype(w.dtype, np.floating)]


#: BatchNorm moments (means and second moments of activations) are clipped to this range for secure pooling: wider
#: than a weight's change, at a coarser step (10 sites: 5e-5)
MOMENTS_RANGE = 1e4


class ClientNoise(Protocol):
    """The parts of a run's DP settings a site needs to noise its own change (DpConfig, or a site task's)."""

    @property
    def level(self) -> str: ...
    @property
    def clip_norm(self) -> float: ...
    @property
    def noise_multiplier(self) -> float: ...


def change_vector(
    weights: Weights, current: Weights, num_examples: int, *, dp: ClientNoise | None = None, sites: int = 1
) -> tuple[np.ndarray, int]:
    """What one site masks in a round: its change of every float layer as one vector, and its weight in the mean.

    With client-level ``dp`` the site clips its change to ``dp.clip_norm`` and adds its share of the noise for
    ``sites`` sites (distributed DP), and weighs 1, as DP-FedAvg's unweighted mean requires; otherwise it weighs its
    ``num_examples``.
    """
    delta = [weights[i].astype(np.float64) - current[i] for i in _floats(current)]
    if dp is None or dp.level != "client":
        return flatten(delta), num_examples
    clipped, _norm = clip(delta, dp.clip_norm)
    return flatten(with_distributed_noise(clipped, dp.clip_norm, dp.noise_multiplier, sites, noise_source())), 1


def apply_mean_change(current: Weights, mean: np.ndarray) -> Weights:
    """``current`` moved by the decoded mean change (float layers only, as ``change_vector`` took them)."""
    floats = _floats(current)
    new = list(current)
    for i, change in zip(floats, unflatten(mean, [current[i] for i in floats]), strict=True):
        new[i] = (current[i] + change).astype(current[i].dtype)
    return new


def moments_vector(moments: Weights) -> np.ndarray:
    """One site's BatchNorm ``[mean_1, var_1, ...]`` as the first and second moments whose example-weighted means
    give the union's: ``[mean_1, mean_2, ..., mean_1^2 + var_1, ...]``."""
    means, variances = moments[0::2], moments[1::2]
    seconds = [v.astype(np.float64) + m.astype(np.float64) ** 2 for m, v in zip(means, variances, strict=True)]
    return flatten([*means, *seconds])


def moments_from_means(mean: np.ndarray, like: Weights) -> Weights:
    """The pooled ``[mean_1, var_1, ...]`` from the decoded mean of ``moments_vector``s (``like``: one site's)."""
    layers = unflatten(mean, [*like[0::2], *like[1::2]])
    half = len(layers) // 2
    pooled: Weights = []
    for first, second in zip(layers[:half], layers[half:], strict=True):
        pooled += [first, np.maximum(second - first.astype(np.float64) ** 2, 0).astype(first.dtype)]
    return pooled


def moments_params(params: SecAggParams) -> SecAggParams:
    """The statistics pass's secure sum: the round's settings over the wider MOMENTS_RANGE."""
    return SecAggParams(params.threshold, MOMENTS_RANGE, params.weight_cap, params.neighbours)


class SecureFedAvg:
    """FedAvg whose sum goes through SecAgg+ (``privacy.secagg``): each site's change is clipped to the config's
    range, quantized over Z_2^32 and masked; only the sum is unmasked, with sites that drop after masking recovered
    from their neighbours' Shamir shares. The result differs from FedAvg by at most ``SecAggParams.error_bound``.

    In a simulation every party lives in the server's trust domain, so this runs the whole protocol (real keys,
    ciphertexts and masks) where the updates arrive: researchers see its cost and its quantization. Over hospital
    sites the agents mask (``worker.site_secure``). With client-level ``dp`` each site clips its change and adds its
    share of the noise before masking (distributed DP), and sites weigh equally as DP-FedAvg requires.
    """

    def __init__(self, params: SecAggParams, dp: DpConfig | None = None) -> None:
        self.params = params
        self.dp = dp

    def aggregate(self, rnd: int, updates: Sequence[ClientUpdate], current: Weights | None = None) -> Aggregate | None:
        if not updates:
            return None
        if current is None:
            raise ValueError("secure aggregation sums each site's change: it needs the weights the round started from")
        sites = len(updates)
        if sites < self.params.threshold:
            raise ValueError(
                f"round {rnd}: {sites} site(s) trained, fewer than the secure-aggregation threshold "
                f"{self.params.threshold}; the round failed and nothing was unmasked"
            )
        vectors = {
            u.client_id: change_vector(u.weights, current, u.num_examples, dp=self.dp, sites=sites) for u in updates
        }
        mean, _total = secure_mean(vectors, self.params, rnd)
        return Aggregate(apply_mean_change(current, mean), {u.client_id: ClientStatus.TRAINED for u in updates})

    def pool_moments(self, rnd: int, stats: Sequence[tuple[str, Weights, int]]) -> Weights:
        """The BatchNorm statistics pass through the same protocol (see ``moments_vector``)."""
        vectors = {cid: (moments_vector(moments), n) for cid, moments, n in stats}
        mean, _total = secure_mean(vectors, moments_params(self.params), rnd)
        return moments_from_means(mean, stats[0][1])

    def state(self) -> list[ClientUpdate]:
        return []

    def restore(self, state: Sequence[ClientUpdate]) -> None:
        if state:
            raise ValueError("secure aggregation keeps no state; the checkpoint belongs to another strategy")


def count_noise(sites: int, noise_multiplier: float) -> float:
    """Noise on the count of sites under the clip norm (adaptive clipping). Andrew et al. suggest m / 20 for m
    sites, which presumes hundreds; the deltas' noise multiplier (z^-2 - (2 sigma_b)^-2)^-1/2 only exists for
    sigma_b > z / 2, so with 3 or 10 hospitals sigma_b = z: the deltas then carry 1.15 z."""
    return max(sites / 20, float(noise_multiplier))


def strategy_with_privacy(cfg: RunConfig, sites: int) -> Strategy:
    """The run's aggregation: FedAvg with its intermittent approach, DP-FedAvg at client-level DP, either through
    secure aggregation when the config asks for it."""
    dp = cfg.privacy.dp
    secure = cfg.privacy.secure_aggregation
    if secure is not None:
        params = SecAggParams(secure.threshold, secure.clip_range, secure.weight_cap)
        return SecureFedAvg(params, dp if dp and dp.level == "client" else None)
    if dp is None or dp.level != "client":
        return strategy_for(cfg.federation.intermittent.approach)
    adaptive = AdaptiveClipping(count_noise(sites, dp.noise_multiplier)) if dp.adaptive_clipping else None
    return ClientDpFedAvg(ClientLevelDP(dp.clip_norm, dp.noise_multiplier, adaptive))


def dp_sgd_settings(cfg: RunConfig) -> DpSgdSettings | None:
    """The DP-SGD each site trains with at sample-level DP, else None (plain training)."""
    dp = cfg.privacy.dp
    return DpSgdSettings(dp.noise_multiplier, dp.clip_norm) if dp and dp.level == "sample" else None


def moments_pooling(strategy: Strategy) -> PoolMoments:
    """How the round's BatchNorm statistics are pooled: through the secure sum when updates are, else in clear."""
    return strategy.pool_moments if isinstance(strategy, SecureFedAvg) else pool_in_clear


class RunPrivacy:
    """The epsilon a run spends, with dp-accounting's RDP accountant (``loop.PrivacyBudget``).

    Client level: one accountant; every round in which a site sent an update counts, at sampling rate 1 (the
    server does not sample sites at random, so no amplification is claimed). Sample level: one accountant per
    site, at q = batch / examples with epochs x ceil(examples / batch) DP-SGD steps a round, counting only the
    rounds in which that site trained; the run's epsilon is the largest site's.
    """

    def __init__(self, dp: DpConfig, accountants: Mapping[str, PrivacyAccountant], strategy: Strategy) -> None:
        self.dp = dp
        self.accountants = accountants
        self.strategy = strategy
        self.rounds = dict.fromkeys(accountants, 0)
        self._clip_norm = dp.clip_norm  # the bound of the round under way (adaptive clipping moves it)

    @classmethod
    def for_run(cls, cfg: RunConfig, samples: Mapping[str, int], strategy: Strategy) -> RunPrivacy | None:
        """None without DP; ``samples`` holds each site's training examples (sample level's sampling rates)."""
        dp = cfg.privacy.dp
        if dp is None:
            return None
        if dp.level == "client":
            return cls(dp, {"": PrivacyAccountant.client_level(dp.noise_multiplier)}, strategy)
        batch, epochs = cfg.model.batch_size, cfg.federation.local_epochs
        accountants = {
            cid: PrivacyAccountant.sample_level(dp.noise_multiplier, examples=n, batch_size=batch, local_epochs=epochs)
            for cid, n in samples.items()
        }
        return cls(dp, accountants, strategy)

    def _epsilon(self, key: str, rounds: int) -> float:
        return self.accountants[key].epsilon(rounds, self.dp.delta)

    def _charged(self, client_ids: Sequence[str]) -> list[str]:
        return [""] if "" in self.accountants else [c for c in client_ids if c in self.accountants]

    def stop_before(self, rnd: int, client_ids: Sequence[str]) -> str | None:
        if isinstance(self.strategy, ClientDpFedAvg):
            self._clip_norm = self.strategy.dp.clip_norm
        target = self.dp.target_epsilon
        if target is None:
            return None
        for key in self._charged(client_ids):
            after = self._epsilon(key, self.rounds[key] + 1)
            if after > target:
                who = f"site {key}'s epsilon" if key else "epsilon"
                return f"stopped before round {rnd}: it would take {who} to {after:.2f}, above the target {target:g}"
        return None

    def spend(self, rnd: int, trained: Sequence[str]) -> RoundPrivacy:
        if trained:
            for key in self._charged(trained):
                self.rounds[key] += 1
        spent = {key: self._epsilon(key, n) for key, n in self.rounds.items()}
        per_client = {} if "" in spent else spent
        epsilon = max(spent.values(), default=0.0)
        return RoundPrivacy(epsilon, self.dp.delta, self.dp.noise_multiplier, self._clip_norm, per_client)

    def state(self) -> dict[str, float]:
        return {f"rounds.{key}": float(n) for key, n in self.rounds.items()}

    def restore(self, state: dict[str, float]) -> None:
        for key in self.rounds:
            self.rounds[key] = int(state.get(f"rounds.{key}", 0))
