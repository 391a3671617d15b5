"""Mutation testing of the engine's maths: which small changes to the code do the tests in tests/engine not notice?

mutmut changes one thing at a time (an operator, a constant, an argument) in each module of `only_mutate` under
[tool.mutmut] in pyproject.toml and runs the tests that reach the changed function. A mutant that no test fails on
"survives". This prints each survivor (file, line, the change), then the equivalent survivors listed in EQUIVALENT
below with why no test can tell them from the original, then the kill rate per module and overall. It exits with
status 1 when a mutant survives that is not listed as equivalent. Every run starts afresh (it deletes ./mutants).

To mutation-test another module, add it to `only_mutate` (a path or a glob, e.g. "worker/engine/privacy/*").
Usage: python -m bench.mutation [MODULE ...]    MODULE: part of a path in only_mutate, e.g. presence metrics
(all five maths modules: about 30 s on 2 cores)
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_STRICT = (", strict=None)", ", strict=False)", ", )")  # the three ways mutmut loosens zip(..., strict=True)
# Survivors judged equivalent: (file, a fragment of the mutated line, why no input makes a test tell it apart).
EQUIVALENT: list[tuple[str, str, str]] = [
    *[
        ("worker/engine/thresholds.py", f"np.round(tpr[::-1], 4).tolist(){arg}", "both lists come from one grid")
        for arg in NOT_STRICT
    ],
    ("worker/engine/thresholds.py", ".reshape(-2)", "numpy reads any negative size as -1"),
    ("worker/engine/thresholds.py", ".reshape(-1).astype(None)", "labels 0 and 1 compare the same as floats"),
    *[
        ("worker/engine/thresholds.py", f"reshape(-1), 0.0, {top})", "a score above 1 lands in the last bin anyway")
        for top in ("None", "2.0")
    ],
    *[
        ("worker/engine/thresholds.py", call, "any numeric scores compare with the grid alike")
        for call in ("np.asarray(probabilities, dtype=None)", "np.asarray(probabilities, ).reshape")
    ],
    *[
        ("worker/engine/aggregate.py", f"zip(w[0::2], w[1::2]{arg}", "the other strict zip raises the same error")
        for arg in NOT_STRICT
    ],
    *[
        ("worker/engine/aggregate.py", f"zip(means, second{arg}", "the other strict zip raises the same error")
        for arg in NOT_STRICT
    ],
    *[
        ("worker/engine/presence.py", f"zip(self.members, draws{arg}", "one draw per member: the lengths always agree")
        for arg in NOT_STRICT
    ],
    *[
        ("worker/engine/partition.py", f"fractions_per_class{arg}", "callers pass one row per class: lengths agree")
        for arg in NOT_STRICT
    ],
    (
        "worker/engine/partition.py",
        "abs(sum(fractions) - 1) >= 1e-6",
        "no float sum lies exactly 1e-6 from 1: the gap is a multiple of 2**-53 (or over 0.5), the double 1e-6 is not",
    ),
    ("worker/engine/metrics.py", "if len(fpr) >= limit:", "thinning exactly `limit` points keeps every one of them"),
    ("worker/engine/metrics.py", ".reshape(-2)", "numpy reads any negative size as -1"),
    ("worker/engine/metrics.py", ".reshape(-1).astype(None)", "labels 0 and 1 count and score the same as floats"),
    ("worker/engine/metrics.py", "(p >= threshold).astype(None)", "predictions 0.0 and 1.0 count the same as 0 and 1"),
    *[
        ("worker/engine/metrics.py", call, "labels=[0, 1] only matters for one class, which binary_metrics refused")
        for call in ("confusion_matrix(y, predicted, labels=None)", "confusion_matrix(y, predicted, )")
    ],
    *[
        ("worker/engine/metrics.py", call, "labels=[0, 1] only matters for one class, which binary_metrics refused")
        for call in ("loss=float(log_loss(y, p, labels=None))", "loss=float(log_loss(y, p, ))")
    ],
]


def equivalent_because(file: str, mutated: list[str]) -> str | None:
    return next((why for f, part, why in EQUIVALENT if f == file and any(part in line for line in mutated)), None)


@dataclass(frozen=True)
class Mutant:
    name: str  # mutmut's, e.g. worker.engine.presence.xǁPresenceǁavailable__mutmut_3
    status: str

    @property
    def file(self) -> str:
        module = self.name.rsplit(".", 1)[0].replace(".", "/")
        return f"{module}.py" if (ROOT / f"{module}.py").exists() else f"{module}/__init__.py"

    @property
    def function(self) -> str:
        """The qualified name of the mutated function, e.g. Presence.available."""
        mangled = self.name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
        return ".".join(mangled.split("ǁ")[1:]) if mangled.startswith("xǁ") else mangled.removeprefix("x_")


def mutated_paths() -> list[str]:
    return list(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"])


def mutmut(*args: str) -> str:
    """Run mutmut's command line in the repository root and return its output; stop with it if mutmut fails."""
    command = shutil.which("mutmut") or str(Path(sys.executable).parent / "mutmut")
    done = subprocess.run([command, *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def changed_lines(mutant: Mutant) -> tuple[list[str], list[str]]:
    """The original and the mutated lines of the mutant, from mutmut's diff of its function."""
    diff = mutmut("show", mutant.name).splitlines()
    removed = [line[1:] for line in diff if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def line_number(mutant: Mutant, removed: list[str]) -> int:
    """Where the first changed line is in the source file (mutmut's diff counts from the function's first line)."""
    source = (ROOT / mutant.file).read_text()
    scope: ast.AST = ast.parse(source)
    for part in mutant.function.split("."):
        scope = next(n for n in ast.iter_child_nodes(scope) if getattr(n, "name", None) == part)
    lines = source.splitlines()
    first, last = getattr(scope, "lineno", 1), getattr(scope, "end_lineno", None) or len(lines)
    wanted = removed[0].strip() if removed else None
    return next((n for n in range(first, last + 1) if lines[n - 1].strip() == wanted), first)


def results(paths: list[str]) -> list[Mutant]:
    patterns = [re.escape(p.removesuffix(".py").replace("/", ".")).replace(r"\*", ".*") + r"\." for p in paths]
    found = []
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if any(re.match(p, name) for p in patterns):
            found.append(Mutant(name, status))
    return found


def report(mutants: list[Mutant]) -> int:
    """Print the survivors and the kill rates; return how many survivors change behaviour."""
    counts: dict[str, Counter[str]] = {}
    equivalent: list[str] = []
    real = 0
    for mutant in sorted(mutants, key=lambda m: (m.file, m.function, int(m.name.rsplit("_", 1)[1]))):
        count = counts.setdefault(mutant.file, Counter())
        count["mutants"] += 1
        if mutant.status in DETECTED:
            count["killed"] += 1
            continue
        removed, added = changed_lines(mutant)
        where = f"{mutant.file}:{line_number(mutant, removed)}  {mutant.status}  {mutant.name.rsplit('.', 1)[1]}"
        reason = equivalent_because(mutant.file, added)
        if reason:
            count["equivalent"] += 1
            equivalent.append(f"{where}\n    + {added[0].strip()}\n    equivalent: {reason}")
            continue
        real += 1
        print("\n".join([where, *(f"    - {line}" for line in removed), *(f"    + {line}" for line in added)]))
    print(f"\n{real} surviving mutant(s) that change behaviour\n")
    print("\n".join(equivalent))
    print(rates(counts))
    return real


def rates(counts: dict[str, Counter[str]]) -> str:
    """The kill rate over all mutants, and over those not judged equivalent."""
    total: Counter[str] = sum(counts.values(), Counter())
    columns = ("mutants", "killed", "equivalent", "alive", "kill rate", "w/o equiv.")
    rows = [f"\n{'module':30}" + "".join(f"{c:>11}" for c in columns)]
    for name, c in [*sorted(counts.items()), ("overall", total)]:
        mutants, killed, equivalent = c["mutants"], c["killed"], c["equivalent"]
        cells: list[int | str] = [mutants, killed, equivalent, mutants - killed - equivalent]
        cells += [f"{killed / max(mutants, 1):.1%}", f"{killed / max(mutants - equivalent, 1):.1%}"]
        rows.append(f"{name:30}" + "".join(f"{cell:>11}" for cell in cells))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="limit the run to the only_mutate paths that contain one of these")
    parser.add_argument("--jobs", type=int, default=None, help="parallel test processes (mutmut's default: all CPUs)")
    args = parser.parse_args()
    paths = [p for p in mutated_paths() if not args.modules or any(m in p for m in args.modules)]
    if not paths:
        raise SystemExit(f"none of {args.modules} is in only_mutate: {mutated_paths()}")
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    globs = [p.removesuffix(".py").replace("/", ".").removesuffix(".*") + ".*" for p in paths]
    mutmut("run", *(["--max-children", str(args.jobs)] if args.jobs else []), *globs)
    sys.exit(1 if report(results(paths)) else 0)


if __name__ == "__main__":
    main()
