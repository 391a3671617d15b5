"""What a config costs before it runs: the training work and the memory a worker needs, against the budgets."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import BadRequest
from app.run_config import RunConfig
from app.settings import Settings

GIB = 2**30
BYTES_PER_PIXEL = 4  # workers hold images as float32
#: Peak memory of a worker over its float32 data set. Measured: prepare() of 4,000 synthetic images at 128 px
#: peaks 573 MiB above start for a 250 MiB data set (2.3x: the data and the clients' splits of it); the centralized
#: baseline's union of the clients' parts adds up to one more copy.
DATA_COPIES = 3.3
RUNTIME_GIB = 1.0  # TensorFlow, the model, its optimizer state and a batch, per worker process


@dataclass(frozen=True)
class Cost:
    images: int | None  # None: the data are files, which only a worker reads
    pixels: int  # per image
    passes: int  # training passes over the data: rounds x local epochs, plus the baseline's epochs

    @property
    def training_pixels(self) -> float | None:
        """Images x pixels x passes: the clients share the images, so each round trains on each image once per
        local epoch whatever the number of clients."""
        return None if self.images is None else float(self.images) * self.pixels * self.passes

    @property
    def memory_gib(self) -> float | None:
        """What one worker process needs: every worker loads the whole data set (simulated clients)."""
        if self.images is None:
            return None
        return self.images * self.pixels * BYTES_PER_PIXEL * DATA_COPIES / GIB + RUNTIME_GIB


def estimate(cfg: RunConfig) -> Cost:
    train = cfg.data.train
    images = None
    if train.format == "synthetic":
        test = cfg.data.test
        images = train.samples + (test.samples if test is not None and test.format == "synthetic" else 0)
    baseline = cfg.centralized_epochs if cfg.centralized.enabled else 0
    passes = cfg.federation.rounds * cfg.federation.local_epochs + baseline
    return Cost(images=images, pixels=cfg.data.image_size**2, passes=passes)


def _largest_size(cost: Cost, fits: float) -> int:
    """The largest image_size (a multiple of 16) whose cost is at most ``fits`` times today's."""
    return max(16, int((cost.pixels * fits) ** 0.5) // 16 * 16)


def over_budget(cfg: RunConfig, settings: Settings) -> tuple[str, str] | None:
    """(config field, message) when the config asks for more memory or work than the budgets allow, else None.

    The message says how much it asks, the limit, and values of the fields to reduce that would fit.
    """
    cost = estimate(cfg)
    if cost.memory_gib is not None and cost.memory_gib > settings.max_worker_memory_gib:
        data_gib = cost.memory_gib - RUNTIME_GIB
        fits = (settings.max_worker_memory_gib - RUNTIME_GIB) / data_gib
        samples = int(cfg.data.train.samples * fits) // 100 * 100
        return "data.train.samples", (
            f"{cost.images:,} images of {cfg.data.image_size}x{cfg.data.image_size} pixels need about "
            f"{cost.memory_gib:.1f} GiB per worker; the limit is {settings.max_worker_memory_gib:g} GiB "
            f"(FEDLENS_MAX_WORKER_MEMORY_GIB): lower data.train.samples to {samples:,} or data.image_size to "
            f"{_largest_size(cost, fits)}"
        )
    work = cost.training_pixels
    if work is not None and work > settings.max_training_pixels:
        fits = settings.max_training_pixels / work
        return "federation.rounds", (
            f"{cost.images:,} images x {cost.pixels:,} pixels x {cost.passes:,} training passes is {work:.2g} "
            f"pixel passes; the limit is {settings.max_training_pixels:.2g} (FEDLENS_MAX_TRAINING_PIXELS): lower "
            f"federation.rounds, federation.local_epochs or centralized.epochs (to {max(1, int(cost.passes * fits))} "
            f"passes in all), data.image_size to {_largest_size(cost, fits)} or data.train.samples"
        )
    return None


def require_within_budget(cfg: RunConfig, settings: Settings) -> None:
    """Raises BadRequest (422) naming the field to reduce."""
    refused = over_budget(cfg, settings)
    if refused is not None:
        field, message = refused
        raise BadRequest(message, f"config.{field}")
