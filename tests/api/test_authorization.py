"""The authorization matrix: every route of the app x {anonymous, viewer, owner, other researcher, admin}.

The rules are listed here by hand, one access class per route, and the test walks ``app.routes``: a route added
without a rule here fails, so nobody adds an endpoint without deciding who may call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.routing import Mount

from app.auth import accounts
from app.main import create_app
from app.models import Role, RunKind
from app.settings import Settings
from app.sites import registry
from tests.api.conftest import bearer
from tests.api.factories import add_experiment, add_run

PRINCIPALS = ("anonymous", "viewer", "owner", "other", "admin")

#: who gets in, per access class; the owner is a researcher, "other" a second researcher
ALLOWED = {
    "public": set(PRINCIPALS),
    "signed-in": {"viewer", "owner", "other", "admin"},
    "researcher": {"owner", "other", "admin"},
    "admin": {"admin"},
    "read-own": {"owner", "admin"},  # the owner's private experiment, its runs, its tokens
    "write-own": {"owner", "admin"},
    "site": set(),  # the signed site protocol: no user credential opens it (tests/api/test_site_protocol.py)
}

RULES = {
    "GET /healthz": "public",
    "GET /login": "public",
    "POST /login": "public",
    "GET /login/link": "public",
    "GET /static/vendor/plotly.min.js": "public",
    "POST /logout": "signed-in",
    "GET /docs": "signed-in",
    "GET /redoc": "signed-in",
    "GET /openapi.json": "signed-in",
    "GET /": "signed-in",
    "GET /compare": "read-own",  # with ?runs= naming the owner's run
    "POST /compare": "signed-in",
    "GET /settings": "signed-in",
    "POST /settings/password": "signed-in",
    "POST /settings/tokens": "signed-in",
    "POST /settings/tokens/{token_id}/revoke": "read-own",
    "GET /api/me": "signed-in",
    "GET /api/tokens": "signed-in",
    "POST /api/tokens": "signed-in",
    "DELETE /api/tokens/{token_id}": "read-own",
    "GET /api/experiments": "signed-in",
    "POST /api/experiments": "researcher",
    "GET /experiments/new": "researcher",
    "POST /experiments/new": "researcher",
    "POST /experiments/preview": "researcher",
    "POST /experiments/check": "researcher",
    "GET /api/experiments/{experiment_id}": "read-own",
    "GET /experiments/{experiment_id}": "read-own",
    "POST /api/experiments/{experiment_id}/runs": "write-own",
    "POST /experiments/{experiment_id}/launch": "write-own",
    "GET /api/runs/{run_id}": "read-own",
    "GET /api/runs/{run_id}/rounds": "read-own",
    "GET /api/runs/{run_id}/roc": "read-own",
    "GET /api/runs/{run_id}/events": "read-own",
    "GET /api/runs/{run_id}/metrics.csv": "read-own",
    "GET /api/runs/{run_id}/model": "read-own",
    "GET /api/runs/{run_id}/gradcam": "read-own",
    "GET /api/runs/{run_id}/gradcam/{file}": "read-own",
    "POST /api/runs/{run_id}/gradcam": "write-own",
    "POST /api/runs/{run_id}/cancel": "write-own",
    "POST /api/runs/{run_id}/resume": "write-own",
    "POST /api/runs/{run_id}/sites": "write-own",
    "GET /runs/{run_id}": "read-own",
    "GET /runs/{run_id}/site-panel": "read-own",
    "GET /api/compare": "read-own",
    "GET /api/compare.csv": "read-own",
    "GET /api/users": "admin",
    "POST /api/users": "admin",
    "PATCH /api/users/{user_id}": "admin",
    "POST /api/users/{user_id}/signin-link": "admin",
    "POST /settings/users": "admin",
    "POST /settings/users/{user_id}": "admin",
    "GET /api/audit": "admin",
    "GET /api/sites": "signed-in",
    "GET /sites": "signed-in",
    "POST /sites": "admin",
    "POST /sites/{site_id}/{action}": "admin",
    "POST /api/sites": "admin",
    "GET /api/sites/ledger": "admin",
    "POST /api/sites/{site_id}/rotate": "admin",
    "POST /api/sites/{site_id}/disable": "admin",
    "POST /api/sites/{site_id}/enable": "admin",
    "POST /api/site/enroll": "public",  # its one-time token is the credential
    "POST /api/site/heartbeat": "site",
    "GET /api/site/tasks/next": "site",
    "GET /api/site/weights/{sha256}": "site",
    "GET /api/site/blobs/{sha256}/upload": "site",
    "PUT /api/site/blobs/{sha256}": "site",
    "POST /api/site/tasks/{task_id}/result": "site",
}

#: the request each route gets: query string and body chosen so that no test launches real work
REQUESTS: dict[str, dict[str, object]] = {
    "GET /login/link": {"params": {"token": "not-a-link"}},
    "POST /login": {"data": {"name": "nobody", "password": "wrong-password"}},
    "POST /experiments/new": {"data": {"federation.rounds": "0"}},
    "POST /experiments/preview": {"data": {"federation.rounds": "0"}},
    "POST /experiments/check": {"data": {"federation.rounds": "0"}},
    "POST /api/experiments": {"json": {}},
    "POST /api/tokens": {"json": {"name": "matrix"}},
    "POST /settings/tokens": {"data": {"name": "matrix"}},
    "POST /api/users": {"json": {"name": "matrix-user", "role": "viewer"}},
    "POST /settings/users": {"data": {"name": "matrix-user-2", "role": "viewer"}},
    "POST /settings/users/{user_id}": {"data": {"role": "viewer"}},
    "PATCH /api/users/{user_id}": {"json": {}},
    "POST /api/sites": {"json": {"name": "matrix-site"}},
    "POST /sites": {"data": {"name": "matrix-site-2"}},
    "POST /api/site/enroll": {"json": {"token": "x" * 43, "public_key": "A" * 44, "agent_version": "1"}},
    "POST /api/runs/{run_id}/sites": {"json": {"site": "matrix-hospital", "dataset": "chest"}},
    "GET /api/compare": {"params": {"runs": "{run_id}"}},
    "GET /api/compare.csv": {"params": {"runs": "{run_id}"}},
    "GET /compare": {"params": {"runs": "{run_id}"}},
}

#: routes whose handler itself may answer 404 with the words an access refusal uses (the event stream reads the
#: run through its own database session, which cannot see this test's uncommitted rows)
HANDLER_404 = {"GET /api/runs/{run_id}/events"}


@dataclass
class World:
    headers: dict[str, dict[str, str]]
    ids: dict[str, str]


@pytest.fixture
def world(session: Session) -> World:
    headers = {
        "anonymous": {},
        "viewer": bearer(session, "viewer", Role.VIEWER),
        "owner": bearer(session, "owner", Role.RESEARCHER),
        "other": bearer(session, "other", Role.RESEARCHER),
        "admin": bearer(session, "boss", Role.ADMIN),
    }
    owner = accounts.ensure_user(session=session, name="owner", role=Role.RESEARCHER)
    experiment = add_experiment(session, name="private")
    experiment.owner_id = owner.id
    session.commit()
    run = add_run(session, experiment, kind=RunKind.FEDERATED)
    spare_token = accounts.issue_token(session=session, user=owner, name="spare", lifetime=accounts.SIGNIN_LINK_TTL)
    spare_user = accounts.create_user(session=session, name="spare", role=Role.VIEWER)
    ids = {
        "experiment_id": str(experiment.id),
        "run_id": str(run.id),
        "token_id": str(spare_token.token.id),
        "user_id": str(spare_user.id),
        "file": "tp-0.png",
        "site_id": str(registry.create_site(session=session, name="matrix-hospital").site.id),
        "sha256": "0" * 64,
        "action": "disable",
        "task_id": str(uuid.uuid4()),
    }
    return World(headers=headers, ids=ids)


def _flatten(entries: Iterable[Any]) -> Iterator[Any]:
    """Routes with their full paths; FastAPI >= 0.16x keeps included routers as entries of their own."""
    for entry in entries:
        if hasattr(entry, "effective_route_contexts"):
            yield from _flatten(entry.effective_route_contexts())
        else:
            yield entry


def routes(settings: Settings) -> list[str]:
    keys = []
    for route in _flatten(create_app(settings).routes):
        if isinstance(route, Mount):  # /static: files anyone may fetch (no data, no config)
            continue
        keys += [f"{method} {route.path}" for method in sorted(route.methods) if method != "HEAD"]
    return keys


def test_every_route_has_an_access_rule(settings: Settings) -> None:
    missing = sorted(set(routes(settings)) - set(RULES))
    assert missing == [], f"add an access rule to RULES for: {missing}"


def _call(client: TestClient, key: str, ids: dict[str, str], headers: dict[str, str]) -> tuple[int, str, str]:
    method, template = key.split(" ", 1)
    options = {k: v for k, v in REQUESTS.get(key, {}).items()}
    if "params" in options:
        options["params"] = {k: str(v).format(**ids) for k, v in dict(options["params"]).items()}  # type: ignore[call-overload]
    response = client.request(
        method,
        template.format(**ids),
        headers=headers | {"Origin": "http://testserver"},
        follow_redirects=False,
        **options,
    )
    return response.status_code, response.headers.get("location", ""), response.text


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_authorization_matrix(
    principal: str, world: World, make_client: Callable[..., TestClient], settings: Settings
) -> None:
    client = make_client(settings, headers={})
    wrong = []
    for key in routes(settings):
        status, location, text = _call(client, key, world.ids, world.headers[principal])
        access = RULES[key]
        refused_as_missing = status == 404 and (
            "no run with id" in text or "no experiment with id" in text or "no token with id" in text
        )
        sign_in = status == 401 or location.startswith("/login?next=")
        if access == "public":  # the login routes answer 401 to a wrong password or link themselves
            ok = status != 403 and not location.startswith("/login?next=")
        elif principal in ALLOWED[access]:
            ok = not sign_in and status != 403 and (not refused_as_missing or key in HANDLER_404)
        elif principal == "anonymous" or access == "site":
            ok = sign_in
        elif access in ("read-own", "write-own") and not (access == "write-own" and principal == "viewer"):
            ok = refused_as_missing
        else:
            ok = status == 403
        if not ok:
            wrong.append(f"{key} [{access}]: {status} {location} {text[:120]}")
    assert wrong == [], "\n".join(wrong)
