"""Building the API app imports neither TensorFlow, Keras nor the worker (STYLE.md section 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
import app.main, app.settings
app.main.create_app(app.settings.Settings(data_dir=sys.argv[1]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "worker", "app"})))
"""


def test_creating_the_api_app_imports_no_tensorflow_keras_or_worker(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data")],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert json.loads(child.stdout.strip().splitlines()[-1]) == ["app"]
