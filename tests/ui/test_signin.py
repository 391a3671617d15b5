"""Accounts in a real browser: an invited user signs in by link, sets a password, signs out and back in."""

from __future__ import annotations

from typing import Any

from tests.e2e.stack import ServiceApi
from tests.ui.conftest import Page

PASSWORD = "a long enough passphrase"


def test_an_invited_researcher_sets_a_password_then_signs_in_with_it(
    server: str, chromium: Any, api: ServiceApi
) -> None:
    invited = api.http.post("/api/users", json={"name": "rita", "role": "researcher"})
    assert invited.status_code == 201, invited.text
    context = chromium.new_context()
    tab = Page(context, server)

    tab.page.goto(invited.json()["link"])
    tab.page.fill("#password", PASSWORD)
    tab.page.fill("#repeat", PASSWORD)
    tab.page.click("text=Save password")
    assert tab.page.locator("#notice").inner_text() == "Password saved."
    tab.page.click("button:has-text('Sign out')")
    assert "/login" in tab.page.url
    tab.goto("/experiments/new")  # a page that needs signing in sends the browser to the login page and back
    tab.page.fill("#name", "rita")
    tab.page.fill("#password", PASSWORD)
    tab.page.click("button:has-text('Sign in')")

    assert tab.page.url == f"{server}/experiments/new"
    assert tab.page.locator(".signout .who").inner_text() == "rita · researcher"
    assert tab.problems == []
    context.close()
