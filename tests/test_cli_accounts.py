"""``fedlens token create`` and the first-start admin link, against a real SQLite database file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import accounts
from app.db import session_factory
from app.migrate import upgrade
from app.models import Role
from app.settings import Settings
from worker.cli import _announce_first_admin

ROOT = Path(__file__).resolve().parents[1]


def fedlens(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"FEDLENS_DATA_DIR": str(tmp_path)}
    env.pop("FEDLENS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_token_create_prints_only_a_working_token_and_creates_the_user(tmp_path: Path) -> None:
    result = fedlens(tmp_path, "token", "create", "--user", "ci-bot", "--role", "researcher", "--days", "2")

    assert result.returncode == 0, result.stderr
    (token,) = result.stdout.splitlines()
    with session_factory(Settings(data_dir=tmp_path))() as session:
        user, why, _expires = accounts.token_user(session=session, secret=token)
        assert why == "ok" and user is not None
        assert (user.name, user.role) == ("ci-bot", Role.RESEARCHER)


def test_token_create_refuses_a_user_name_it_cannot_show_safely(tmp_path: Path) -> None:
    result = fedlens(tmp_path, "token", "create", "--user", "a b<script>", "--role", "viewer")

    assert result.returncode == 2
    assert result.stdout == "" and "--user" in result.stderr


def test_the_first_start_prints_a_one_time_admin_link_and_later_starts_do_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path)
    upgrade(settings.database)

    _announce_first_admin(settings, "http://127.0.0.1:8000")
    first = capsys.readouterr().out
    _announce_first_admin(settings, "http://127.0.0.1:8000")
    second = capsys.readouterr().out

    assert first.startswith("first start: sign in as admin") and "http://127.0.0.1:8000/login/link?token=" in first
    assert second == ""
    secret = first.rsplit("token=", 1)[1].strip()
    with session_factory(settings)() as session:
        admin = accounts.redeem_signin_link(session=session, secret=secret)
        assert admin is not None and admin.role == Role.ADMIN
