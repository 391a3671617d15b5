"""The run page over hospital sites: site names for client numbers, and each site's status, samples and metrics.

The panel is rendered on the server and fetched again by the page while the run is open (``GET
/runs/{id}/site-panel``), so what each site is doing now shows without a reload.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import results
from app.models import Run, RunStatus, Site, SiteTask
from app.schemas import ClientRoundRead, LocalBaselineRead, RoundRead
from app.sites import registry

# The site executor's failure messages (worker/site_executor.py) tell a late site from an offline one: away when
# the round started, or its heartbeats stopped during the round.
LATE = "did not answer"
OFFLINE = ("was offline when round", "went offline during round")
GLOBAL_KEYS = ("auc", "accuracy", "sensitivity", "specificity")
#: what a site is doing, by the kind of the task it holds
DOING = {
    "train": "training",
    "statistics": "measuring BatchNorm statistics",
    "evaluate": "evaluating",
    "advertise": "secure aggregation",
    "share": "secure aggregation",
    "unmask": "secure aggregation",
    "local": "training its local-only baseline",
}
#: what a hospital's board compares before joining: the federated model against one trained on its data alone
COMPARED = ("auc", "sensitivity", "specificity")


@dataclass(frozen=True)
class SiteCell:
    round: int
    state: str  # trained, kept, late, offline, failed, absent, left, not-joined
    note: str  # the failure message, or ""


@dataclass(frozen=True)
class Versus:
    """One metric on a site's own test split: the federated (global) model against the site's local-only model."""

    key: str
    federated: float | None
    local: float | None

    @property
    def difference(self) -> float | None:
        """Federated minus local-only: positive when the federation did better for this site."""
        if self.federated is None or self.local is None:
            return None
        return self.federated - self.local


@dataclass(frozen=True)
class LocalComparison:
    versus: list[Versus]  # one per COMPARED metric
    threshold: float | None  # the local-only model's operating threshold
    error: str  # why the site has no local-only model, or ""


def compare_local(federated: Mapping[str, float | None], local: LocalBaselineRead) -> LocalComparison:
    """A site's federated metrics (``SiteRow.metrics``) beside its local-only model's, metric by metric."""
    versus = [Versus(key, federated.get(key), local.metrics.get(key)) for key in COMPARED]
    return LocalComparison(versus, local.threshold, local.error or "")


@dataclass(frozen=True)
class SiteRow:
    client: str
    site: str
    dataset: str
    samples: int | None
    cells: list[SiteCell]  # one per stored round, in order
    metrics: dict[str, float | None]  # the global model on the site's own test split: auc, accuracy, ...
    metrics_round: int | None
    local: LocalComparison | None = None  # with baselines [local], once the site's result is stored


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


def site_rows(
    config: Mapping[str, Any], rounds: Sequence[RoundRead], local_baselines: Sequence[LocalBaselineRead] = ()
) -> list[SiteRow]:
    """One row per site of the run, in client order, over the rounds stored so far, with its local baseline."""
    local = {baseline.client: baseline for baseline in local_baselines}
    rows = []
    for number, ref in enumerate(config.get("federation", {}).get("sites", []), start=1):
        per_round = [(r.number, next((c for c in r.clients if c.id == str(number)), None)) for r in rounds]
        seen = [(n, c) for n, c in per_round if c is not None]
        trained = [c for _, c in seen if c.status == "trained"]
        judged = [(n, c) for n, c in seen if "global.accuracy" in c.metrics]
        last_round, last = judged[-1] if judged else (None, None)
        metrics = {k: last.metrics.get(f"global.{k}") for k in GLOBAL_KEYS} if last else {}
        baseline = local.get(str(number))
        rows.append(
            SiteRow(
                client=str(number),
                site=ref["site"],
                dataset=ref["dataset"],
                samples=trained[-1].samples if trained else None,
                cells=[_cell(n, c) for n, c in per_round],
                metrics=metrics,
                metrics_round=last_round,
                local=compare_local(metrics, baseline) if baseline else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Panel:
    rows: list[SiteRow]
    now: dict[str, str]  # site name -> "offline", "idle", "training round 3", "busy with another run"
    joinable: dict[str, list[str]]  # online sites outside the run -> the datasets they declare
    open: bool  # the run may still take a new site (POST /api/runs/{id}/sites says why not otherwise)
    local_asked: bool  # the config asks for baselines [local]


def site_panel(session: Session, run: Run, config: Mapping[str, Any], offline_after_s: float) -> Panel:
    """The per-site panel of a run over sites: one row per site, what each does now, who could still join.
    ``offline_after_s``: settings.site_offline_after_s."""
    names = [ref["site"] for ref in config["federation"]["sites"]]
    sites = {s.name: s for s in registry.list_sites(session=session)}
    return Panel(
        rows=site_rows(
            config,
            results.load_rounds(session=session, run_id=run.id),
            [LocalBaselineRead.model_validate(row) for row in run.local_baselines or []],
        ),
        now=activity(session, run.id, [sites[n] for n in names if n in sites], offline_after_s),
        joinable={
            name: [d["name"] for d in site.datasets]
            for name, site in sites.items()
            if name not in names and site.datasets and site.public_key and registry.is_online(site, offline_after_s)
        },
        open=run.status != RunStatus.SUCCEEDED and not (config.get("privacy") or {}).get("dp"),
        local_asked="local" in config.get("baselines", []),
    )


def activity(session: Session, run_id: uuid.UUID, sites: Sequence[Site], offline_after_s: float) -> dict[str, str]:
    """Each site's state now, from its last heartbeat and the task it reported working on."""
    busy = [s.busy_with for s in sites if s.busy_with is not None]
    tasks = {t.id: t for t in session.scalars(select(SiteTask).where(SiteTask.id.in_(busy)))} if busy else {}
    now = {}
    for site in sites:
        task = tasks.get(site.busy_with) if site.busy_with else None
        if not registry.is_online(site, offline_after_s):
            now[site.name] = "offline"
        elif task is None:
            now[site.name] = "idle"
        elif task.run_id != run_id:
            now[site.name] = "busy with another run"
        else:
            now[site.name] = f"{DOING.get(task.kind, task.kind)}, round {task.round}"
    return now
