"""Turn a RunConfig into the data each client holds, the common test set and the participation schedule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.run_config import DirichletPartition, RunConfig, SizesPartition
from worker.engine import partition
from worker.engine.data import DataError, Dataset, load_source, require_both_classes
from worker.engine.presence import Membership, Presence


def derive_seed(*parts: int) -> int:
    """An independent 31-bit seed per (run seed, purpose, round, client, ...) so resumed runs agree."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


# Purposes of the random streams drawn from the run seed; each has its own so that one does not shift another.
TEST_SPLIT, PARTITION, CLIENT_SPLIT, SYNTHETIC_TEST, INIT, CLIENT_FIT, CENTRAL_FIT = range(7)


@dataclass(frozen=True)
class ClientData:
    client_id: str
    train: Dataset
    test: Dataset  # the client's own test set (the study's Table 1); may be empty


@dataclass(frozen=True)
class Federation:
    clients: list[ClientData]
    test: Dataset  # the common test set every global model is evaluated on

    def central_train(self) -> Dataset:
        """The union of the clients' training data: what the centralized baseline learns from."""
        return Dataset(
            np.concatenate([c.train.images for c in self.clients]),
            np.concatenate([c.train.labels for c in self.clients]),
        )


def _shares(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng([cfg.seed, PARTITION])
    spec, k = cfg.federation.partition, cfg.federation.clients
    if isinstance(spec, SizesPartition):
        return partition.sizes(labels, spec.fractions, rng)
    if isinstance(spec, DirichletPartition):
        return partition.dirichlet(labels, k, spec.alpha, rng)
    return partition.iid(labels, k, rng)


def prepare(cfg: RunConfig) -> Federation:
    """Load the data and split it: common test set, then client shares, then each client's own test part."""
    size = cfg.data.image_size
    data = load_source(cfg.data.train, size, cfg.seed)
    require_both_classes(data, "the training data")
    if cfg.data.test is not None:
        test = load_source(cfg.data.test, size, derive_seed(cfg.seed, SYNTHETIC_TEST))
    else:
        keep, held = partition.holdout(
            data.labels, cfg.data.test_fraction, np.random.default_rng([cfg.seed, TEST_SPLIT])
        )
        data, test = data.subset(keep), data.subset(held)
    require_both_classes(test, "the common test set")
    clients = []
    split_rng = np.random.default_rng([cfg.seed, CLIENT_SPLIT])
    for number, share in enumerate(_shares(cfg, data.labels), start=1):
        own = data.subset(share)
        keep, held = partition.holdout(own.labels, cfg.federation.client_test_fraction, split_rng)
        if len(keep) == 0:
            raise DataError(f"client {number} got no training images; use fewer clients or more data")
        clients.append(ClientData(str(number), own.subset(keep), own.subset(held)))
    return Federation(clients, test)


def presence_for(cfg: RunConfig) -> Presence:
    joins = {e.client: e.joins for e in cfg.federation.intermittent.events if e.joins is not None}
    leaves = {e.client: e.leaves for e in cfg.federation.intermittent.events if e.leaves is not None}
    members = [Membership(str(c), joins.get(c, 1), leaves.get(c)) for c in range(1, cfg.federation.clients + 1)]
    return Presence(members, cfg.federation.intermittent.availability, cfg.seed)
