"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest

from tests.realdata import require_real_data


@pytest.fixture(scope="module")
def shared_data() -> None:
    """Marks a test that reads the real chest X-ray files (see tests/realdata.py)."""
    require_real_data()
