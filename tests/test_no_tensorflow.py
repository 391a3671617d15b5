"""The engine's pure modules import without TensorFlow or Keras, so the fast tests and the API stay light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PURE_MODULES = [
    "app.run_config",
    "worker.engine.aggregate",
    "worker.engine.strategy",
    "worker.engine.presence",
    "worker.engine.partition",
    "worker.engine.loop",
    "worker.engine.data",
    "worker.engine.experiment",
    "worker.engine.checkpoint",
    "worker.engine.metrics",
    "worker.local_run",
]

CHILD = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"imported": [n for n in sys.argv[1:] if n in sys.modules], "heavy": heavy}))
"""


def test_engine_modules_import_without_tensorflow_or_keras() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *PURE_MODULES],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["imported"] == PURE_MODULES
    assert report["heavy"] == []
