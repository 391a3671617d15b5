"""Request signing of the site protocol: what verifies, and each way a request is refused."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.sites.protocol import (
    NONCE_HEADER,
    REPLAY_WINDOW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    body_sha256,
    public_key_text,
    sign,
    verify,
)

BODY = b'{"agent_version": "1"}'


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_signed_request_verifies_and_yields_its_nonce(key: Ed25519PrivateKey) -> None:
    headers = sign(key, "site-1", "POST", "/api/site/heartbeat", body_sha256(BODY))

    assert (
        verify(public_key_text(key), headers, "POST", "/api/site/heartbeat", body_sha256(BODY)) == headers[NONCE_HEADER]
    )


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("GET", "/api/site/heartbeat", BODY),  # another method
        ("POST", "/api/site/heartbeat?x=1", BODY),  # another target
        ("POST", "/api/site/heartbeat", BODY + b" "),  # another body
    ],
)
def test_any_change_to_method_target_or_body_breaks_the_signature(
    key: Ed25519PrivateKey, method: str, target: str, body: bytes
) -> None:
    headers = sign(key, "site-1", "POST", "/api/site/heartbeat", body_sha256(BODY))

    with pytest.raises(SignatureError, match="wrong signature"):
        verify(public_key_text(key), headers, method, target, body_sha256(body))


def test_another_sites_key_does_not_verify(key: Ed25519PrivateKey) -> None:
    headers = sign(key, "site-1", "GET", "/api/site/tasks/next", body_sha256(b""))

    with pytest.raises(SignatureError, match="wrong signature"):
        verify(public_key_text(Ed25519PrivateKey.generate()), headers, "GET", "/api/site/tasks/next", body_sha256(b""))


def test_a_request_outside_the_replay_window_is_refused(key: Ed25519PrivateKey) -> None:
    headers = sign(key, "site-1", "GET", "/api/site/tasks/next", body_sha256(b""))

    later = time.time() + REPLAY_WINDOW_S + 5
    with pytest.raises(SignatureError, match="window"):
        verify(public_key_text(key), headers, "GET", "/api/site/tasks/next", body_sha256(b""), now=later)


@pytest.mark.parametrize("header", [TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER])
def test_an_unsigned_request_names_the_missing_header(key: Ed25519PrivateKey, header: str) -> None:
    headers = sign(key, "site-1", "GET", "/x", body_sha256(b""))
    del headers[header]

    with pytest.raises(SignatureError, match=header):
        verify(public_key_text(key), headers, "GET", "/x", body_sha256(b""))
