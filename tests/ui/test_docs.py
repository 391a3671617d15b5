"""Swagger UI renders the API's operations in a browser that may not reach anything but the server."""

from __future__ import annotations

from typing import Any

from tests.ui.conftest import Page


def test_docs_render_every_operation_with_the_network_cut_off(server: str, browser: Any) -> None:
    tab = Page(browser, server)
    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    tab.page.route("**/*", only_the_server)
    tab.goto("/docs")
    tab.page.wait_for_selector(".opblock", timeout=30_000)

    assert tab.page.locator(".opblock").count() >= 10
    assert outside == []
    assert tab.problems == []
