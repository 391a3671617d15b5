"""Security headers on every response: no framing (clickjacking), scripts only from our own origin, no sniffing."""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Plotly sets inline styles and draws into data:/blob: images; no inline script is allowed (templates have none).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI middleware (no BaseHTTPMiddleware), so event streams pass through unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def allowing_inline_scripts(response: HTMLResponse) -> HTMLResponse:
    """The policy above plus the SHA-256 of each inline script of this page (CSP level 2 hashes), for the one page
    that needs one: Swagger UI's start-up script. No other inline script can run there."""
    scripts = re.findall(rb"<script>(.*?)</script>", response.body, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(js).digest()).decode()}'" for js in scripts)
    response.headers["content-security-policy"] = CONTENT_SECURITY_POLICY.replace(
        "script-src 'self';", f"script-src 'self' {hashes};"
    )
    return response
