"""A run's rounds load in a fixed number of queries, whatever its length: no query per round or per client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.models import RunStatus
from app.results import load_rounds
from tests.api.factories import add_experiment, add_run, round_result, trained
from worker.store import save_round


@contextmanager
def counted(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []
    bind = session.connection()

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(bind, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(bind, "before_cursor_execute", record)


def test_ten_clients_by_two_hundred_rounds_load_in_as_many_queries_as_one_round(session: Session) -> None:
    def stored_run(clients: int, rounds: int) -> uuid.UUID:
        run = add_run(session, add_experiment(session, clients=clients, rounds=rounds), status=RunStatus.SUCCEEDED)
        for number in range(1, rounds + 1):
            result = round_result(number, clients=[trained(str(c)) for c in range(1, clients + 1)])
            save_round(session, run.id, result, f"ckpt/{number}")
        return run.id

    small, large = stored_run(1, 1), stored_run(10, 200)

    with counted(session) as one_round:
        load_rounds(session=session, run_id=small)
    with counted(session) as many_rounds:
        rounds = load_rounds(session=session, run_id=large)

    assert len(rounds) == 200 and all(len(r.clients) == 10 for r in rounds)
    # rounds, client statuses, metrics: one query per table, and one for the join/leave schedule in the config
    assert len(many_rounds) == len(one_round) == 4
