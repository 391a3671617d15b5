"""Turn a RunConfig into the data each client holds, the common test set and the participation schedule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from app.run_config import DataSource, DirichletPartition, RunConfig, SizesPartition
from worker.engine import partition
from worker.engine.aggregate import balanced_class_weight
from worker.engine.data import DataError, Dataset, LoadReport, Roots, load_source, require_both_classes
from worker.engine.presence import Membership, Presence


def derive_seed(*parts: int) -> int:
    """An independent 31-bit seed per (run seed, purpose, round, client, ...) so resumed runs agree."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] >> 1)


# Purposes of the random streams drawn from the run seed; each has its own so that one does not shift another.
TEST_SPLIT, PARTITION, CLIENT_SPLIT, SYNTHETIC_TEST, INIT, CLIENT_FIT, CENTRAL_FIT, VALIDATION_SPLIT = range(8)
LOCAL_FIT = 8  # a site's local-only baseline


@dataclass(frozen=True)
class ClientData:
    client_id: str
    train: Dataset
    test: Dataset  # the client's own test set (the study's Table 1); may be empty
    validation: Dataset  # chooses the operating threshold (counts only leave the client); may be empty


@dataclass(frozen=True)
class Federation:
    clients: list[ClientData]
    test: Dataset  # the common test set every global model is evaluated on
    reports: dict[str, LoadReport] = field(default_factory=dict)  # per config field: what its loader saw

    def central_train(self) -> Dataset:
        """The union of the clients' training data: what the centralized baseline learns from."""
        return _union([c.train for c in self.clients])

    def central_validation(self) -> Dataset:
        """The union of the clients' validation parts: where the baseline chooses its threshold."""
        return _union([c.validation for c in self.clients])

    def report_dicts(self) -> dict[str, dict[str, dict[str, int]]]:
        """What each source's loader saw, by config field (``LoadReport.as_dict``): for the API, results.json and the
        run's record."""
        return {name: report.as_dict() for name, report in self.reports.items()}

    def report_lines(self) -> list[str]:
        """What each source's loader saw, one ``field: line`` per line (counts, sizes, skipped files)."""
        return [f"{name}: {line}" for name, report in self.reports.items() for line in report.summary()]

    def class_weight(self, cfg: RunConfig) -> dict[int, float] | None:
        """The loss weights every client and the baseline train with, from the clients' summed label counts."""
        if cfg.model.class_weight == "none":
            return None
        counts = [np.bincount(c.train.labels, minlength=2) for c in self.clients]
        return balanced_class_weight([(int(n[0]), int(n[1])) for n in counts])


def _union(parts: list[Dataset]) -> Dataset:
    return Dataset(np.concatenate([d.images for d in parts]), np.concatenate([d.labels for d in parts]))


def _shares(cfg: RunConfig, labels: np.ndarray) -> list[np.ndarray]:
    """Client shares of the training data; a share too small to train on is a DataError that names the client."""
    rng = np.random.default_rng([cfg.seed, PARTITION])
    spec, k = cfg.federation.partition, cfg.federation.clients
    try:
        if isinstance(spec, SizesPartition):
            shares = partition.sizes(labels, spec.fractions, rng)
        elif isinstance(spec, DirichletPartition):
            shares = partition.dirichlet(labels, k, spec.alpha, rng)
        else:
            shares = partition.iid(labels, k, rng)
    except ValueError as error:
        raise DataError(str(error), "federation.partition") from error
    for number, share in enumerate(shares, start=1):
        if len(share) < partition.MIN_CLIENT_SAMPLES:
            raise DataError(
                f"client {number} gets {len(share)} of the {len(labels)} training images with partition "
                f"{spec.kind}; give it a larger share, use fewer clients or more data",
                "federation.partition",
            )
    return shares


def _load(
    source: DataSource, cfg: RunConfig, seed: int, field: str, split: str, report: LoadReport, roots: Roots
) -> Dataset:
    try:
        return load_source(source, cfg.data.image_size, seed, default_split=split, report=report, roots=roots)
    except DataError as error:
        raise DataError(str(error), error.field or field) from error


def content_hashes(data: Dataset) -> set[bytes]:
    """One digest per image of its decoded pixels, so a re-encoded copy of an image still matches."""
    quantized = np.round(data.images * 255).astype(np.uint8)
    return {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in quantized}


def _refuse_overlap(train: Dataset, test: Dataset) -> None:
    shared = content_hashes(train) & content_hashes(test)
    if shared:
        raise DataError(
            f"the common test set shares {len(shared)} image(s) with the training data, so its metrics would "
            "reward memorising them; give data.test a split (or source) disjoint from data.train",
            "data.test",
        )


def prepare(cfg: RunConfig, roots: Roots = None) -> Federation:
    """Load the data and split it: common test set, then client shares, then each client's own test part.

    ``roots``: the only folders data may be read from (the service's FEDLENS_DATA_ROOTS); None for the local CLI.
    Raises DataError with the config field it concerns.
    """
    if cfg.over_sites:
        return _server_side_of_sites(cfg, roots)
    reports = {"data.train": LoadReport()}
    data = _load(cfg.data.train, cfg, cfg.seed, "data.train", "train", reports["data.train"], roots)
    require_both_classes(data, "the training data", "data.train")
    if cfg.data.test is not None:
        reports["data.test"] = LoadReport()
        seed = derive_seed(cfg.seed, SYNTHETIC_TEST)
        test = _load(cfg.data.test, cfg, seed, "data.test", "test", reports["data.test"], roots)
        _refuse_overlap(data, test)
    else:
        keep, held = partition.holdout(
            data.labels, cfg.data.test_fraction, np.random.default_rng([cfg.seed, TEST_SPLIT])
        )
        data, test = data.subset(keep), data.subset(held)
    require_both_classes(test, "the common test set", "data.test" if cfg.data.test else "data.test_fraction")
    clients = []
    split_rng = np.random.default_rng([cfg.seed, CLIENT_SPLIT])
    validation_rng = np.random.default_rng([cfg.seed, VALIDATION_SPLIT])
    for number, share in enumerate(_shares(cfg, data.labels), start=1):
        own = data.subset(share)
        keep, held = partition.holdout(own.labels, cfg.federation.client_test_fraction, split_rng)
        kept = own.subset(keep)
        train, validation = partition.holdout(kept.labels, cfg.federation.client_validation_fraction, validation_rng)
        if len(train) == 0:
            raise DataError(
                f"client {number} keeps no training images after its own test and validation parts; lower "
                "federation.client_test_fraction or client_validation_fraction, use fewer clients or more data",
                "federation.client_test_fraction",
            )
        clients.append(ClientData(str(number), kept.subset(train), own.subset(held), kept.subset(validation)))
    return Federation(clients, test, reports)


def _server_side_of_sites(cfg: RunConfig, roots: Roots) -> Federation:
    """Over hospital sites the server holds no training data; only the optional common test set (data.test)."""
    if cfg.data.test is None:
        size = cfg.data.image_size
        return Federation([], Dataset(np.zeros((0, size, size, 1), np.float32), np.zeros(0, np.uint8)))
    report = LoadReport()
    seed = derive_seed(cfg.seed, SYNTHETIC_TEST)
    test = _load(cfg.data.test, cfg, seed, "data.test", "test", report, roots)
    require_both_classes(test, "the common test set", "data.test")
    return Federation([], test, {"data.test": report})


def presence_for(cfg: RunConfig) -> Presence:
    joins = {e.client: e.joins for e in cfg.federation.intermittent.events if e.joins is not None}
    leaves = {e.client: e.leaves for e in cfg.federation.intermittent.events if e.leaves is not None}
    members = [Membership(str(c), joins.get(c, 1), leaves.get(c)) for c in range(1, cfg.federation.clients + 1)]
    return Presence(members, cfg.federation.intermittent.availability, cfg.seed)
