"""Request headers that authenticate a test client: none today; the authentication work makes this a bearer token."""

from __future__ import annotations


def auth_headers() -> dict[str, str]:
    return {}
