"""Data roots at the API: a config whose data lies outside FEDLENS_DATA_ROOTS is refused before it is stored or
checked; the workers check again before they open anything (worker.engine.data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from app.errors import FieldErrors
from app.run_config import RunConfig, paths_outside_roots


def require_within(config: RunConfig, roots: Sequence[Path]) -> None:
    """Raises FieldErrors (a 422 at ``config.data.train.path`` and the like) naming the roots, and nothing about
    the refused path: whether it exists, what it holds, or even the path itself."""
    problems = paths_outside_roots(config, roots)
    if problems:
        raise FieldErrors({("config", *loc): message for loc, message in problems.items()}, "data_root")
