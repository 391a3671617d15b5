"""The real chest X-ray files the tests read: ../shared/data beside the checkout, or FEDLENS_TEST_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("FEDLENS_TEST_DATA") or Path(__file__).parents[1] / ".." / "shared" / "data")
PNEUMONIAMNIST = SHARED_DATA / "pneumoniamnist_balanced_28.npz"
KERMANY = SHARED_DATA / "kermany_train_64.npz"


def require_real_data() -> None:
    """Skip where the files are absent, except under CI (CI=true), where that is a failure."""
    missing = [str(path) for path in (PNEUMONIAMNIST, KERMANY) if not path.is_file()]
    if not missing:
        return
    message = f"real test data missing: {', '.join(missing)} (set FEDLENS_TEST_DATA to the folder that holds them)"
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{message}; CI must run these tests", pytrace=False)
    pytest.skip(message)
