"""Signing in and out, sessions, CSRF and Origin checks, token expiry and revocation, the audit log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.auth import accounts, deps
from app.auth.deps import SESSION_COOKIE
from app.auth.recent import RecentCallers, changes
from app.models import ApiToken, AuditEvent, Experiment, Role, User, WebSession, utcnow
from app.settings import Settings
from tests.api.conftest import bearer
from tests.api.pagetree import page

ORIGIN = {"Origin": "http://testserver"}
PASSWORD = "correct horse battery"


@pytest.fixture
def browser(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings, headers={})


@pytest.fixture
def alice(session: Session) -> User:
    return accounts.create_user(session=session, name="alice", role=Role.RESEARCHER, password=PASSWORD)


def sign_in(browser: TestClient, name: str = "alice", password: str = PASSWORD) -> str:
    """Sign in through the login form; returns the session's CSRF token as the pages carry it."""
    response = browser.post(
        "/login", data={"name": name, "password": password, "next": "/"}, headers=ORIGIN, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return str(page(browser.get("/settings")).find("meta", name="csrf-token").attrs["content"])


def audit_outcomes(session: Session, action: str) -> list[tuple[str, str]]:
    rows = session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
    return [(e.actor, e.outcome) for e in rows]


def test_pages_send_an_anonymous_browser_to_the_login_page_and_the_api_answers_401(browser: TestClient) -> None:
    page_response = browser.get("/runs/00000000-0000-0000-0000-000000000000", follow_redirects=False)
    api_response = browser.get("/api/experiments")

    assert page_response.status_code == 303
    assert page_response.headers["location"] == "/login?next=/runs/00000000-0000-0000-0000-000000000000"
    assert api_response.status_code == 401
    assert api_response.headers["www-authenticate"] == "Bearer"
    assert browser.get("/healthz").status_code in (200, 503)  # anonymous, answered either way
    assert browser.get("/login").status_code == 200


def test_login_sets_an_httponly_strict_cookie_and_logout_ends_the_session(
    browser: TestClient, alice: User, session: Session
) -> None:
    response = browser.post(
        "/login",
        data={"name": "alice", "password": PASSWORD, "next": "/compare"},
        headers=ORIGIN,
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"]

    assert response.headers["location"] == "/compare"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain HTTP here
    secret = browser.cookies[SESSION_COOKIE]
    assert session.scalar(select(WebSession.secret_sha256)) != secret  # only its hash is stored
    assert browser.get("/api/me").json()["user"]["name"] == "alice"
    csrf = page(browser.get("/")).find("meta", name="csrf-token").attrs["content"]

    browser.post("/logout", data={"csrf_token": csrf}, headers=ORIGIN)

    assert session.scalar(select(WebSession)) is None
    browser.cookies.set(SESSION_COOKIE, secret)  # a copied cookie is dead too
    assert browser.get("/api/me").status_code == 401


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong_and_audited(
    browser: TestClient, alice: User, session: Session
) -> None:
    wrong_password = browser.post("/login", data={"name": "alice", "password": "x" * 12}, headers=ORIGIN)
    unknown_user = browser.post("/login", data={"name": "mallory", "password": "x" * 12}, headers=ORIGIN)

    assert wrong_password.status_code == unknown_user.status_code == 401
    alerts = {page(r, 401).find("div", role="alert").text for r in (wrong_password, unknown_user)}
    assert alerts == {"Wrong name or password."}
    assert audit_outcomes(session, "login") == [
        ("anonymous", "wrong name or password"),
        ("anonymous", "wrong name or password"),
    ]


def test_the_login_page_never_redirects_to_another_site(browser: TestClient, alice: User) -> None:
    response = browser.post(
        "/login",
        data={"name": "alice", "password": PASSWORD, "next": "//evil.example/x"},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_a_cookie_session_post_needs_the_csrf_token(browser: TestClient, alice: User, session: Session) -> None:
    csrf = sign_in(browser)

    without = browser.post("/api/tokens", json={"name": "script"}, headers=ORIGIN)
    wrong = browser.post("/api/tokens", json={"name": "script"}, headers=ORIGIN | {"X-CSRF-Token": "guess"})
    right = browser.post("/api/tokens", json={"name": "script"}, headers=ORIGIN | {"X-CSRF-Token": csrf})
    form = browser.post("/settings/tokens", data={"name": "form", "csrf_token": csrf}, headers=ORIGIN)

    assert (without.status_code, wrong.status_code, right.status_code, form.status_code) == (403, 403, 201, 200)
    assert "reload the page" in without.json()["detail"]
    assert audit_outcomes(session, "POST /api/tokens")[:2] == [("alice", "missing or wrong CSRF token")] * 2


def test_a_cross_origin_post_is_refused_even_with_the_csrf_token(browser: TestClient, alice: User) -> None:
    csrf = sign_in(browser)

    evil = browser.post(
        "/api/tokens", json={"name": "x"}, headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf}
    )
    no_origin = browser.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    login = browser.post(
        "/login", data={"name": "alice", "password": PASSWORD}, headers={"Origin": "http://evil.example"}
    )

    assert (evil.status_code, no_origin.status_code, login.status_code) == (403, 403, 403)
    assert "cross-origin" in evil.json()["detail"]


def test_a_bearer_token_needs_no_csrf_token_and_works_on_pages(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    script = make_client(settings, headers=bearer(session, "bot", Role.RESEARCHER))

    assert script.post("/api/tokens", json={"name": "another"}).status_code == 201
    assert script.get("/").status_code == 200


@pytest.mark.parametrize("state", ["expired", "revoked", "disabled user", "unknown"])
def test_expired_revoked_unknown_and_disabled_tokens_get_401_and_are_audited(
    state: str, make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    user = accounts.create_user(session=session, name="carol", role=Role.VIEWER)
    issued = accounts.issue_token(session=session, user=user, name="t", lifetime=timedelta(days=1))
    secret = issued.secret
    if state == "expired":
        issued.token.expires_at = utcnow() - timedelta(seconds=1)
    elif state == "revoked":
        accounts.revoke_token(session=session, token_id=issued.token.id, owner=user)
    elif state == "disabled user":
        user.disabled = True
    else:
        secret = "not" + secret
    session.commit()

    response = make_client(settings, headers={"Authorization": f"Bearer {secret}"}).get("/api/me")

    assert response.status_code == 401
    assert state.split()[0] in response.json()["detail"]
    assert audit_outcomes(session, "GET /api/me")[-1][1].startswith(state.split()[0])


def test_tokens_are_stored_as_sha256_only_and_their_last_use_is_recorded(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    headers = bearer(session, "dave", Role.VIEWER)
    secret = headers["Authorization"].removeprefix("Bearer ")

    make_client(settings, headers=headers).get("/api/me")

    token = session.scalar(select(ApiToken).where(ApiToken.prefix == secret[:8]))
    assert token is not None and token.last_used_at is not None
    assert secret not in (token.secret_sha256, token.prefix, token.name)
    assert len(token.secret_sha256) == 64


def test_a_signin_link_works_once_then_asks_for_a_password(browser: TestClient, session: Session) -> None:
    erin = accounts.create_user(session=session, name="erin", role=Role.VIEWER)
    issued = accounts.signin_link(session=session, user=erin)

    first = browser.get(f"/login/link?token={issued.secret}", follow_redirects=False)
    browser.cookies.clear()
    second = browser.get(f"/login/link?token={issued.secret}", follow_redirects=False)

    assert (first.status_code, first.headers["location"]) == (303, "/settings")
    assert second.status_code == 401


def test_researchers_see_their_own_and_shared_experiments_only(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    ann = make_client(settings, headers=bearer(session, "ann", Role.RESEARCHER))
    bob = make_client(settings, headers=bearer(session, "bob", Role.RESEARCHER))
    viewer = make_client(settings, headers=bearer(session, "vic", Role.VIEWER))
    for name, shared in (("ann-private", False), ("ann-shared", True)):
        body = {"name": name, "shared": shared, "config": {"name": name}}
        assert ann.post("/api/experiments", json=body).status_code == 201

    def names(client: TestClient) -> set[str]:
        return {e["name"] for e in client.get("/api/experiments").json()["items"]}

    assert names(ann) == {"ann-private", "ann-shared"}
    assert names(bob) == names(viewer) == {"ann-shared"}
    private = session.scalar(select(Experiment).where(Experiment.name == "ann-private"))
    assert private is not None
    assert bob.post(f"/api/experiments/{private.id}/runs").json() == {"detail": f"no experiment with id {private.id}"}


def test_every_mutation_is_audited_with_who_what_and_from_where(client: TestClient, session: Session) -> None:
    client.post("/api/tokens", json={"name": "audited"})

    events = client.get("/api/audit").json()["items"]

    assert [(e["actor"], e["action"], e["outcome"], e["client_ip"]) for e in events][:1] == [
        ("test-admin", "POST /api/tokens", "ok", "testclient")
    ]


def test_responses_forbid_framing_and_foreign_scripts(browser: TestClient) -> None:
    headers = browser.get("/login").headers

    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self';" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("change", ["revoke the token", "disable the user", "sign out"])
def test_a_caller_recalled_from_the_last_seconds_is_refused_at_once_after_an_account_change(
    change: str, make_client: Callable[..., TestClient], settings: Settings, session: Session, alice: User
) -> None:
    """Most requests skip the database for who is asking (app.auth.recent); a change made through fedlens must
    still take effect on the very next request."""
    issued = accounts.issue_token(session=session, user=alice, name="t", lifetime=timedelta(days=1))
    script = make_client(settings, headers={"Authorization": f"Bearer {issued.secret}"})
    browser = make_client(settings, headers={})
    sign_in(browser)
    assert script.get("/api/me").status_code == browser.get("/api/me").status_code == 200  # both now recalled

    if change == "revoke the token":
        accounts.revoke_token(session=session, token_id=issued.token.id, owner=alice)
    elif change == "disable the user":
        accounts.update_user(session=session, user_id=alice.id, role=None, disabled=True)
    else:
        accounts.end_session(session=session, secret=browser.cookies[SESSION_COOKIE])

    refused = {"script": script.get("/api/me").status_code, "browser": browser.get("/api/me").status_code}
    expected = {
        "revoke the token": {"script": 401, "browser": 200},
        "disable the user": {"script": 401, "browser": 401},
        "sign out": {"script": 200, "browser": 401},
    }
    assert refused == expected[change]


def test_a_change_made_outside_this_process_takes_effect_within_the_recall_time(
    make_client: Callable[..., TestClient], settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another API process (or an operator's SQL) revokes a token: this process stops accepting it once its
    recollection lapses, and never past the token's own expiry."""
    monkeypatch.setattr(deps, "_recent", RecentCallers(recall_s=0.5))
    user = accounts.create_user(session=session, name="erin", role=Role.VIEWER)
    issued = accounts.issue_token(session=session, user=user, name="t", lifetime=timedelta(days=1))
    client = make_client(settings, headers={"Authorization": f"Bearer {issued.secret}"})
    assert client.get("/api/me").status_code == 200

    session.execute(update(ApiToken).where(ApiToken.id == issued.token.id).values(revoked_at=utcnow()))
    session.commit()
    recalled = client.get("/api/me").status_code
    time.sleep(0.6)

    assert (recalled, client.get("/api/me").status_code) == (200, 401)


def test_a_recalled_caller_does_not_outlive_its_token() -> None:
    recent = RecentCallers(recall_s=60)
    user = User(id=uuid.uuid4(), name="frank", role=Role.VIEWER, disabled=False)
    recent.put("token:a", user, expires_at=utcnow() + timedelta(seconds=0.3), generation=changes.value)
    recent.put("token:b", user, expires_at=utcnow() + timedelta(days=1), generation=changes.value - 1)

    assert recent.get("token:a") is not None and recent.get("token:b") is None  # b was looked up before a change
    time.sleep(0.4)
    assert recent.get("token:a") is None
