"""Enrollment: pin the server's certificate, create the site's key and register its public half once."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import ValidationError

from app.sites.protocol import Enroll, Enrolled, public_key_text
from worker.site.connection import new_http_client, response_detail, send
from worker.site.identity import (
    CERT_FILE,
    SITE_FILE,
    SiteError,
    SiteIdentity,
    agent_version,
    certificate_fingerprint,
    load_or_create_key,
    make_folder,
    mismatch,
    normalize_fingerprint,
    parse_server,
    pinned_context,
    presented_certificate,
    write_identity,
)

ENROLL_PATH = "/api/site/enroll"


def enroll(*, server: str, token: str, fingerprint: str | None, folder: Path, insecure_http: bool) -> SiteIdentity:
    """Enroll this site with a one-time token; the server's certificate must have the fingerprint the admin gave.

    The fingerprint is compared before anything is sent, and the enrollment itself travels over a connection
    that trusts only that certificate, so the token never reaches another server.
    """
    address = parse_server(server, insecure_http=insecure_http)
    if (folder / SITE_FILE).exists():
        raise SiteError(f"{folder} already holds an enrolled site; give another --dir to enroll again")
    pinned = normalize_fingerprint(fingerprint) if fingerprint is not None else None
    if address.tls and pinned is None:
        raise SiteError("--fingerprint is required: the SHA-256 of the server's certificate, shown with the token")
    make_folder(folder)
    tls = None
    if address.tls:
        try:
            pem = presented_certificate(address)
        except OSError as error:
            raise SiteError(f"cannot reach {address.url}: {error}") from error
        presented = certificate_fingerprint(pem)
        if presented != pinned:
            raise mismatch(address, str(pinned), presented)
        (folder / CERT_FILE).write_text(pem)
        tls = pinned_context(pem)
    key = load_or_create_key(folder)
    try:
        body = Enroll(token=token, public_key=public_key_text(key), agent_version=agent_version())
    except ValidationError:
        raise SiteError("--token does not look like an enrollment token (20 to 100 characters)") from None
    with new_http_client(address, tls) as http:
        request = http.build_request(
            "POST", ENROLL_PATH, content=body.model_dump_json(), headers={"Content-Type": "application/json"}
        )
        try:
            response = send(http, address, pinned, request)
        except httpx.TransportError as error:
            raise SiteError(f"cannot reach {address.url}: {error}") from error
    if response.status_code != 201:
        raise SiteError(f"the server refused the enrollment ({response.status_code}): {response_detail(response)}")
    enrolled = Enrolled.model_validate_json(response.content)
    write_identity(folder, address, str(enrolled.site_id), enrolled.name, pinned if address.tls else None)
    return SiteIdentity(folder, address, str(enrolled.site_id), enrolled.name, pinned, key)
