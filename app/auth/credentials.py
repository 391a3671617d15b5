"""Secrets handed to users (tokens, cookies, links) and password hashes: random, shown once, stored only hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: scrypt cost (RFC 7914; OWASP's password storage cheat sheet recommends N=2^17, r=8, p=1 as a minimum).
#: It is recorded in each hash, so raising it later keeps old hashes verifiable.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MIN_PASSWORD_LENGTH = 12


def new_secret() -> str:
    """256 random bits, URL-safe: an API token, a session cookie or a sign-in link."""
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What the database keeps of a secret: its SHA-256 (the secret has 256 bits, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex); raises ValueError for a password shorter than MIN_PASSWORD_LENGTH."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(16)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check of a password against a stored hash; False for a user without a password."""
    if not stored:
        return False
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p)), bytes.fromhex(key))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
