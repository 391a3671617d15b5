"""What users are told of a failure: short messages that say what to do, never SQL, parameters or server paths."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from worker.celery_executor import ClientTimeout
from worker.engine.aggregate import weighted_mean
from worker.engine.data import DataError
from worker.failures import user_message

SQL, PARAMS = "UPDATE run SET model_path=%(p)s WHERE id = %(id)s", {"p": "/srv/fedlens/secret.keras", "id": 1}


class PgLockTimeout(Exception):
    sqlstate = "55P03"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (DataError("x.npz: no such .npz file", "data.train"), "data error in data.train: x.npz: no such .npz file"),
        (DataError("no rows"), "data error: no rows"),
        (ClientTimeout("round 3: clients did not answer"), "ClientTimeout: round 3: clients did not answer"),
        (
            OperationalError(SQL, PARAMS, sqlite3.OperationalError("database is locked")),
            "the database was busy; resume the run once it answers again (the server log has the details)",
        ),
        (
            OperationalError(SQL, PARAMS, PgLockTimeout("canceling statement due to lock timeout")),
            "the database was busy; resume the run once it answers again (the server log has the details)",
        ),
        (
            IntegrityError(SQL, PARAMS, Exception("duplicate key")),
            "the database refused a write; resume the run once it is healthy (the server log has the details)",
        ),
        (
            PermissionError(13, "Permission denied", "/srv/fedlens/artifacts/run/model.keras"),
            "a file of the run could not be read or written; check the artifacts folder's free space and rights",
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "the broker (Redis) could not be reached; resume the run once it is back",
        ),
        (KeyError("/srv/secret"), "internal error (KeyError); the server log has the details"),
        (ValueError("cannot load /srv/secret.h5"), "internal error (ValueError); the server log has the details"),
    ],
)
def test_each_failure_becomes_a_short_message_without_sql_or_paths(error: BaseException, message: str) -> None:
    assert user_message(error) == message


def test_a_value_error_the_engine_raises_keeps_its_own_words() -> None:
    with pytest.raises(ValueError) as caught:
        weighted_mean([])
    assert user_message(caught.value) == "ValueError: cannot aggregate: no client reported training examples"
