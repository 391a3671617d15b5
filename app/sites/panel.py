"""The run page over hospital sites: site names for client numbers, and each site's status, samples and metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.schemas import ClientRoundRead, RoundRead

# The site executor's failure messages (worker/site_executor.py) tell a late site from an offline one: away when
# the round started, or its heartbeats stopped during the round.
LATE = "did not answer"
OFFLINE = ("was offline when round", "went offline during round")
GLOBAL_KEYS = ("auc", "accuracy", "sensitivity", "specificity")


@dataclass(frozen=True)
class SiteCell:
    round: int
    state: str  # trained, kept, late, offline, failed, absent, left, not-joined
    note: str  # the failure message, or ""


@dataclass(frozen=True)
class SiteRow:
    client: str
    site: str
    dataset: str
    samples: int | None
    cells: list[SiteCell]  # one per stored round, in order
    metrics: dict[str, float | None]  # the global model on the site's own test split: auc, accuracy, ...
    metrics_round: int | None


def client_names(config: Mapping[str, Any]) -> dict[str, str]:
    """Client number (as the rounds store it) to site name; empty for a simulation. Client i is the i-th site."""
    sites = config.get("federation", {}).get("sites", [])
    return {str(number): ref["site"] for number, ref in enumerate(sites, start=1)}


def cell_state(client: ClientRoundRead) -> str:
    """A site's state in one round: a failure that is a timeout is late, one at the round's start or of its
    heartbeats is offline. A site whose last update was kept (keep-last) is kept, its failure the cell's note."""
    if client.status == "failed" and client.error:
        if LATE in client.error:
            return "late"
        if any(phrase in client.error for phrase in OFFLINE):
            return "offline"
    if client.status == "absent" and client.presence != "present":
        return client.presence
    return client.status


def _cell(number: int, client: ClientRoundRead | None) -> SiteCell:
    if client is None:  # no record of the site in this round
        return SiteCell(number, "", "")
    return SiteCell(number, cell_state(client), "" if client.status == "trained" else client.error or "")


def site_rows(config: Mapping[str, Any], rounds: Sequence[RoundRead]) -> list[SiteRow]:
    """One row per site of the run, in client order, over the rounds stored so far."""
    rows = []
    for number, ref in enumerate(config.get("federation", {}).get("sites", []), start=1):
        per_round = [(r.number, next((c for c in r.clients if c.id == str(number)), None)) for r in rounds]
        seen = [(n, c) for n, c in per_round if c is not None]
        trained = [c for _, c in seen if c.status == "trained"]
        judged = [(n, c) for n, c in seen if "global.accuracy" in c.metrics]
        last_round, last = judged[-1] if judged else (None, None)
        rows.append(
            SiteRow(
                client=str(number),
                site=ref["site"],
                dataset=ref["dataset"],
                samples=trained[-1].samples if trained else None,
                cells=[_cell(n, c) for n, c in per_round],
                metrics={k: last.metrics.get(f"global.{k}") for k in GLOBAL_KEYS} if last else {},
                metrics_round=last_round,
            )
        )
    return rows
