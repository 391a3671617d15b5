"""User errors from ``fedlens run``: one line naming what to change, exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = {
    "empty client": (
        "federation: {clients: 3, partition: {kind: sizes, fractions: [0.49, 0.49, 0.02]}}",
        "Error: federation.partition: client 3 gets 0 of the 16 training images with partition sizes; "
        "give it a larger share, use fewer clients or more data",
    ),
    "starved dirichlet": (
        "federation: {clients: 10, partition: {kind: dirichlet, alpha: 0.01}}",
        "Error: federation.partition: dirichlet(alpha=0.01) left a client with fewer than 2 samples in 100 draws; "
        "use fewer clients, more data or a larger alpha",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_partition_that_cannot_work_is_one_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    federation, expected = CASES[case]
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: {{format: synthetic, samples: 20}}, image_size: 16}}\n{federation}\n")
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run", str(config), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == expected
