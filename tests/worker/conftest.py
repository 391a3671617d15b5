"""Worker test fixtures: a recorder of what a local run really trains."""

from __future__ import annotations

import pytest

from tests.worker.spies import Recorder, install


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return install(monkeypatch)
