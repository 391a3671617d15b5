"""The Jinja2 environment every page renders with, and the globals its templates share."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from app import results
from app.auth.deps import Principal

ROOT = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=ROOT / "templates")


def signed_in(request: Request) -> Principal | None:
    """The caller, once app.auth has authenticated the request (None on the login page)."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


templates.env.globals["execution_time"] = results.EXECUTION_TIME  # one definition for every page that shows it
templates.env.globals["signed_in"] = signed_in
