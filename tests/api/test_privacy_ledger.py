"""The privacy ledger: each site's epsilon per dataset summed over runs, for admins only."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import PrivacySpend, Role, utcnow
from app.settings import Settings
from tests.api.conftest import bearer
from tests.api.pagetree import page


def spend(session: Session, site: str, epsilon: float, *, when: datetime, experiment: str = "dp") -> uuid.UUID:
    run_id = uuid.uuid4()
    session.add(
        PrivacySpend(
            run_id=run_id,
            site=site,
            dataset="chest",
            experiment=experiment,
            level="sample",
            epsilon=epsilon,
            delta=1e-5,
            rounds=5,
            updated_at=when,
        )
    )
    session.flush()
    return run_id


def test_the_ledger_sums_each_site_dataset_over_its_runs_newest_first(client: TestClient, session: Session) -> None:
    now = utcnow()
    first = spend(session, "hospital-a", 1.5, when=now - timedelta(hours=2), experiment="first")
    second = spend(session, "hospital-a", 2.25, when=now, experiment="second")
    spend(session, "hospital-b", 4.0, when=now)

    entries = client.get("/api/sites/ledger").json()

    assert [(e["site"], e["dataset"]) for e in entries] == [("hospital-a", "chest"), ("hospital-b", "chest")]
    a = entries[0]
    assert (a["epsilon_spent"], a["delta_spent"]) == (3.75, pytest.approx(2e-5))
    assert [r["run_id"] for r in a["runs"]] == [str(second), str(first)]
    assert [r["experiment"] for r in a["runs"]] == ["second", "first"]
    assert entries[1]["epsilon_spent"] == 4.0


@pytest.mark.parametrize("role", [Role.VIEWER, Role.RESEARCHER])
def test_only_admins_read_the_ledger(
    make_client: Callable[..., TestClient], settings: Settings, session: Session, role: Role
) -> None:
    spend(session, "hospital-a", 1.0, when=utcnow())
    user = make_client(settings, headers=bearer(session, f"user-{role.value}", role))

    assert user.get("/api/sites/ledger").status_code == 403
    assert not page(user.get("/sites")).has_id("ledger")


def test_the_sites_page_lists_the_ledger_with_each_run(client: TestClient, session: Session) -> None:
    spend(session, "hospital-a", 1.5, when=utcnow(), experiment="first")
    spend(session, "hospital-a", 2.25, when=utcnow(), experiment="second")

    [row] = page(client.get("/sites")).by_id("ledger-table").find_all("tr", **{"data-site": "hospital-a"})

    assert "3.75" in row.text and "2 runs" in row.text
    assert "first" in row.text and "second" in row.text
