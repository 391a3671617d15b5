"""/docs and /redoc work offline: their pages name no external URL and every asset they name is served here."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

URL = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_no_external_url_and_their_assets_load(client: TestClient, page: str) -> None:
    html = client.get(page).text

    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
    assets = URL.findall(html)
    assert len(assets) >= 2  # the page's script, and its icon (and the CSS for Swagger UI)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 100, asset


def test_swagger_ui_reads_openapi_3_1(client: TestClient) -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI reads from version 5 on (version 4 shows no operation)."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get(URL.findall(client.get("/docs").text)[-1]).text  # the last asset: the script
    assert "OpenAPI 3.1" in bundle or "3.1.0" in bundle
