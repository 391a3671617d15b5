"""Read a run's results: rounds with global and per-client metrics, ROC curves, Table 3 and CSV."""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections import defaultdict
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.auth.policy import can_see, visible_to
from app.errors import BadRequest, NotFound
from app.memo import SingleFlightLRU
from app.models import GLOBAL, ClientRound, Experiment, FlRound, RoundMetric, Run, RunKind, User
from app.runs import get_run
from app.schedule import presence, run_schedule
from app.schemas import ClientRoc, CompareRow, RocRead, RoundRead, RunRead


def run_read(run: Run) -> RunRead:
    return RunRead.model_validate(run).model_copy(update={"has_model": run.model_path is not None})


_ROUNDS = TypeAdapter(list[RoundRead])


def _value(metric: RoundMetric) -> float | None:
    return None if metric.is_nan else metric.value


def load_rounds(*, session: Session, run_id: uuid.UUID, since: int = 0) -> list[RoundRead]:
    """All rounds after ``since``: one query per table whatever the number of rounds and clients (and one for the
    join/leave schedule, which tells a client that has not joined yet or has left from one that did not answer).

    Plain column tuples rather than ORM objects: a run of 10 clients x 100 rounds has ~7,000 metric
    rows, and building an ORM object for each was most of the endpoint's time.
    """
    metrics: dict[tuple[int, str], dict[str, float | None]] = defaultdict(dict)
    m = RoundMetric
    metric_rows = select(m.round, m.client_id, m.key, m.value, m.is_nan).where(m.run_id == run_id, m.round > since)
    for rnd, client, key, value, is_nan in session.execute(metric_rows):
        metrics[rnd, client][key] = None if is_nan else value
    clients: dict[int, list[dict[str, Any]]] = defaultdict(list)
    schedule = run_schedule(session=session, run_id=run_id)
    c = ClientRound
    client_rows = select(c.round, c.client_id, c.status, c.event, c.samples, c.error).where(
        c.run_id == run_id, c.round > since
    )
    for rnd, client, status, event, samples, error in session.execute(client_rows):
        clients[rnd].append(
            {
                "id": client,
                "status": status,
                "event": event,
                "presence": presence(schedule, client, rnd),
                "samples": samples,
                "error": error,
                "metrics": metrics.get((rnd, client), {}),
            }
        )
    for rows in clients.values():
        rows.sort(key=lambda row: (len(row["id"]), row["id"]))  # "2" before "10"
    f = FlRound
    round_rows = select(
        f.number,
        f.wall_s,
        f.train_s,
        f.calibration_s,
        f.aggregation_s,
        f.evaluation_s,
        f.startup_s,
        f.bytes_sent,
        f.bytes_received,
        f.test_samples,
        f.finished_at,
    ).where(f.run_id == run_id, f.number > since)
    rounds = []
    for row in session.execute(round_rows.order_by(f.number)):
        r = row._asdict()
        r["critical_path_s"] = r["train_s"] + r["calibration_s"] + r["aggregation_s"] + r["evaluation_s"]
        r["metrics"] = metrics.get((r["number"], GLOBAL), {})
        r["clients"] = clients.get(r["number"], [])
        r["privacy"] = _privacy(r["metrics"], r["clients"])
        rounds.append(r)
    return _ROUNDS.validate_python(rounds)


def _privacy(metrics: dict[str, float | None], clients: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``privacy.*`` values a DP round stored (worker.engine.types.RoundPrivacy.scalars), as one object."""
    if metrics.get("privacy.epsilon") is None:
        return None
    values = {key.removeprefix("privacy."): value for key, value in metrics.items() if key.startswith("privacy.")}
    sites = {c["id"]: c["metrics"]["privacy.epsilon"] for c in clients if "privacy.epsilon" in c["metrics"]}
    return values | {"sites": sites}


#: serialized rounds by (database, run, since, last stored round): stored rounds never change, so a key is valid
#: until the run stores another round (``current_round`` changes); a watched dashboard costs one small query
_rounds_cache = SingleFlightLRU()


def rounds_json(*, session: Session, run: Run, since: int = 0) -> bytes:
    """``load_rounds`` as JSON, served from memory while the run has stored no new round."""
    key = (str(session.get_bind().engine.url), run.id, since, run.current_round)

    def serialized() -> bytes:
        return _ROUNDS.dump_json(load_rounds(session=session, run_id=run.id, since=since))

    return _rounds_cache.get(key, serialized)


def roc(*, session: Session, run_id: uuid.UUID, round_number: int | None) -> RocRead:
    """The ROC curve of one round's global model; the last completed round by default."""
    get_run(session=session, run_id=run_id)
    query = select(FlRound).where(FlRound.run_id == run_id)
    query = query.where(FlRound.number == round_number) if round_number else query.order_by(FlRound.number.desc())
    found = session.scalars(query.limit(1)).first()
    if found is None:
        where = f"round {round_number}" if round_number else "any completed round"
        raise NotFound(f"run {run_id} has no ROC curve for {where}")
    auc = session.get(RoundMetric, (run_id, found.number, GLOBAL, "test.auc"))
    client_rows = session.scalars(
        select(ClientRound).where(
            ClientRound.run_id == run_id, ClientRound.round == found.number, ClientRound.roc.is_not(None)
        )
    ).all()
    client_aucs = {
        m.client_id: _value(m)
        for m in session.scalars(
            select(RoundMetric).where(
                RoundMetric.run_id == run_id, RoundMetric.round == found.number, RoundMetric.key == "global.auc"
            )
        )
    }
    clients = [
        ClientRoc(id=c.client_id, auc=client_aucs.get(c.client_id), fpr=c.roc["fpr"], tpr=c.roc["tpr"])
        for c in sorted(client_rows, key=lambda c: (len(c.client_id), c.client_id))
        if c.roc
    ]
    return RocRead(
        run_id=run_id,
        round=found.number,
        auc=_value(auc) if auc else None,
        fpr=found.roc["fpr"],
        tpr=found.roc["tpr"],
        clients=clients,
    )


def _summary(session: Session, run: Run) -> tuple[dict[str, float | None], float, float, float]:
    """(last round's global metrics, summed wall time, summed critical path, start-up): two small queries, however
    long the run; the per-client rows that ``load_rounds`` would read are not needed here. The start-up is the
    run's own (orchestrator or baseline) plus each round's slowest client start-up."""
    f, m = FlRound, RoundMetric
    critical = f.train_s + f.calibration_s + f.aggregation_s + f.evaluation_s
    last, wall, parallel, startup = session.execute(
        select(
            func.max(f.number),
            func.coalesce(func.sum(f.wall_s), 0.0),
            func.coalesce(func.sum(critical), 0.0),
            func.coalesce(func.sum(f.startup_s), 0.0),
        ).where(f.run_id == run.id)
    ).one()
    final_rows = select(m.key, m.value, m.is_nan).where(m.run_id == run.id, m.round == last, m.client_id == GLOBAL)
    final = {key: None if is_nan else value for key, value, is_nan in session.execute(final_rows)}
    return final, float(wall), float(parallel), float(startup) + run.startup_s


def _reduction(federated_s: float, central_s: float) -> float | None:
    return (central_s - federated_s) / central_s if central_s > 0 else None


def compare(*, session: Session, run_ids: list[uuid.UUID], viewer: User) -> list[CompareRow]:
    """The study's Table 3 for these runs; each federated run is compared with a centralized run.

    The centralized reference is one of the requested runs if there is one, else the baseline
    launched with the federated run's experiment.
    """
    if not run_ids:
        raise BadRequest("give at least one run id: /api/compare?runs=ID,ID", "query.runs")
    runs = [get_run(session=session, run_id=rid) for rid in run_ids]
    if hidden := next((r.id for r in runs if not can_see(r.experiment, viewer)), None):
        raise NotFound(f"no run with id {hidden}")
    summaries = {run.id: _summary(session, run) for run in runs}
    chosen = next((r for r in runs if r.kind == RunKind.CENTRALIZED), None)
    rows = []
    for run in runs:
        final, wall, parallel, startup = summaries[run.id]
        central = chosen
        if central is None and run.kind == RunKind.FEDERATED:
            central = next((r for r in run.experiment.runs if r.kind == RunKind.CENTRALIZED), None)
        reduction = with_startup = None
        if central is not None and run.kind == RunKind.FEDERATED:
            _, central_wall, _, central_startup = summaries.get(central.id) or _summary(session, central)
            reduction = _reduction(parallel, central_wall)
            with_startup = _reduction(parallel + startup, central_wall + central_startup)
        rows.append(
            CompareRow(
                run_id=run.id,
                experiment=run.experiment.name,
                kind=run.kind,
                status=run.status,
                clients=run.experiment.config["federation"]["clients"] if run.kind == RunKind.FEDERATED else None,
                loss=final.get("test.loss"),
                accuracy=final.get("test.accuracy"),
                sensitivity=final.get("test.sensitivity"),
                specificity=final.get("test.specificity"),
                threshold=final.get("test.threshold"),
                auc=final.get("test.auc"),
                auc_ci_low=final.get("test.auc_ci_low"),
                auc_ci_high=final.get("test.auc_ci_high"),
                n_negative=_count(final.get("test.n_negative")),
                n_positive=_count(final.get("test.n_positive")),
                rounds=run.current_round,
                execution_time_s=wall,
                parallel_time_s=parallel if run.kind == RunKind.FEDERATED else wall,
                startup_s=startup,
                centralized_run_id=central.id if central else None,
                time_reduction=reduction,
                time_reduction_with_startup=with_startup,
                epsilon=final.get("privacy.epsilon"),
            )
        )
    return rows


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


#: Table 3's CSV columns: every CompareRow field but the baseline's id, which only links the page's rows.
COMPARE_CSV_COLUMNS = tuple(name for name in CompareRow.model_fields if name != "centralized_run_id")


def compare_csv(rows: list[CompareRow]) -> str:
    """Table 3 as CSV, one row per run; empty cells where a value does not apply."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COMPARE_CSV_COLUMNS)
    for row in rows:
        values = row.model_dump(mode="json")
        writer.writerow(["" if values[c] is None else values[c] for c in COMPARE_CSV_COLUMNS])
    return out.getvalue()


def metrics_csv(*, session: Session, run_id: uuid.UUID) -> str:
    """Long format, one row per (round, client, metric): client "" is the global model on the common test set."""
    get_run(session=session, run_id=run_id)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["round", "client", "status", "metric", "value"])
    for r in load_rounds(session=session, run_id=run_id):
        for key, value in r.metrics.items():
            writer.writerow([r.number, "", "", key, "" if value is None or math.isnan(value) else value])
        for c in r.clients:
            writer.writerow([r.number, c.id, c.status, "samples", c.samples])
            for key, value in c.metrics.items():
                writer.writerow([r.number, c.id, c.status, key, "" if value is None else value])
    return out.getvalue()


def best_auc(*, session: Session, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Best global test AUC of each run, in one query."""
    if not run_ids:
        return {}
    query = (
        select(RoundMetric.run_id, func.max(RoundMetric.value))
        .where(
            RoundMetric.run_id.in_(run_ids),
            RoundMetric.client_id == GLOBAL,
            RoundMetric.key == "test.auc",
            RoundMetric.is_nan.is_(False),
        )
        .group_by(RoundMetric.run_id)
    )
    return {run_id: value for run_id, value in session.execute(query)}


#: The one definition of a run's execution time, shown wherever it appears (experiments list, compare page).
EXECUTION_TIME = (
    "Execution time: the rounds' (or epochs') wall time added up, one after another; excludes waiting in the "
    "queue and the one-off start-up (data loading, model building, tracing), which is shown on its own"
)


def execution_times(*, session: Session, run_ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Summed round wall time of each run, in one query."""
    if not run_ids:
        return {}
    query = select(FlRound.run_id, func.sum(FlRound.wall_s)).where(FlRound.run_id.in_(run_ids))
    return {run_id: float(total) for run_id, total in session.execute(query.group_by(FlRound.run_id))}


def experiment_rows(*, session: Session, viewer: User) -> list[dict[str, Any]]:
    """The experiments ``viewer`` may see, with runs, progress, best AUC and duration: the dashboard's home table."""
    experiments = session.scalars(
        select(Experiment)
        .where(visible_to(viewer))
        .options(selectinload(Experiment.runs))
        .order_by(Experiment.created_at.desc())
    ).all()
    run_ids = [r.id for e in experiments for r in e.runs]
    best = best_auc(session=session, run_ids=run_ids)
    executed = execution_times(session=session, run_ids=run_ids)
    rows = []
    for e in experiments:
        run_rows = [
            {
                "id": str(r.id),
                "kind": str(r.kind),
                "status": str(r.status),
                "done": r.current_round,
                "total": r.total_rounds,
                "best_auc": best.get(r.id),
                "execution_s": executed.get(r.id),
                "error": r.error,
                "created_at": r.created_at,
            }
            for r in e.runs
        ]
        aucs = [r["best_auc"] for r in run_rows if r["best_auc"] is not None]
        rows.append(
            {
                "id": str(e.id),
                "name": e.name,
                "description": e.description,
                "created_at": e.created_at,
                "clients": e.config["federation"]["clients"],
                "rounds": e.config["federation"]["rounds"],
                "runs": run_rows,
                "best_auc": max(aucs) if aucs else None,
            }
        )
    return rows


def best_of(table: list[CompareRow]) -> dict[str, uuid.UUID]:
    """For each Table 3 column, the run with the best value (lowest loss and time, highest accuracy, sensitivity
    and AUC); a column whose best value is shared marks none."""
    best: dict[str, uuid.UUID] = {}
    for column, pick in (
        ("loss", min),
        ("accuracy", max),
        ("sensitivity", max),
        ("auc", max),
        ("execution_time_s", min),
        ("parallel_time_s", min),
        ("time_reduction", max),
    ):
        scored = [(getattr(row, column), row.run_id) for row in table if getattr(row, column) is not None]
        values = [value for value, _ in scored]
        if len(scored) > 1 and values.count(pick(values)) == 1:  # a tie has no best
            best[column] = pick(scored, key=lambda s: s[0])[1]
    return best
