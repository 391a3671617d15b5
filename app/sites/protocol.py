"""The hospital-site protocol: request signing and message bodies, the one module the server and the agent share.

Pure pydantic and `cryptography` (no FastAPI, no database), so that the site agent (worker/site/) imports it
beside app.run_config and nothing else from app/.

Every request after enrollment is signed with the site's Ed25519 key (RFC 8032) over a canonical string of the
method, the path with its query, a timestamp, a random nonce and the SHA-256 of the body, in the spirit of
HTTP Message Signatures (RFC 9421) but with one fixed set of components. The server accepts a timestamp within
``REPLAY_WINDOW_S`` of its clock and each nonce once, so a captured request cannot be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from app.limits.bounds import Text

PROTOCOL_VERSION = 1
SITE_HEADER = "X-Fedlens-Site"
TIMESTAMP_HEADER = "X-Fedlens-Timestamp"
NONCE_HEADER = "X-Fedlens-Nonce"
SIGNATURE_HEADER = "X-Fedlens-Signature"
#: the bytes of a partial upload the server holds, on a 409 answer to a chunk sent at another offset (as in tus)
OFFSET_HEADER = "Upload-Offset"
REPLAY_WINDOW_S = 300
#: counts leave a site only per split and class; these are the class names of a binary task
CLASSES = ("negative", "positive")
SPLITS = ("train", "validation", "test")
#: a dataset's name, chosen by the site: what tasks and summaries call it
DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SignatureError(ValueError):
    """Why a signed request was refused (the server answers 401 and audits this text)."""


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical(method: str, target: str, timestamp: str, nonce: str, digest: str) -> bytes:
    """What is signed: ``target`` is the path with its query string, exactly as sent."""
    return "\n".join(("fedlens-site-v1", method.upper(), target, timestamp, nonce, digest)).encode()


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key, base64: what enrollment registers."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(key: Ed25519PrivateKey, site_id: str, method: str, target: str, digest: str) -> dict[str, str]:
    """The headers that authenticate one request of site ``site_id`` whose body has SHA-256 ``digest``."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    signature = key.sign(canonical(method, target, timestamp, nonce, digest))
    return {
        SITE_HEADER: site_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
    }


def verify(
    public_key: str, headers: Mapping[str, str], method: str, target: str, digest: str, *, now: float | None = None
) -> str:
    """Check a request's signature and timestamp against its body's SHA-256 ``digest`` (streamed bodies are
    hashed as they arrive); returns the nonce, which the caller must accept only once.

    Raises SignatureError naming what is wrong: a missing header, a clock outside the window, a bad signature.
    """
    try:
        timestamp, nonce, signature = headers[TIMESTAMP_HEADER], headers[NONCE_HEADER], headers[SIGNATURE_HEADER]
    except KeyError as missing:
        raise SignatureError(f"unsigned request: header {missing.args[0]} is missing") from None
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > REPLAY_WINDOW_S:
        raise SignatureError(f"timestamp outside the {REPLAY_WINDOW_S} s window: check the site's clock")
    if not 16 <= len(nonce) <= 64:
        raise SignatureError("malformed nonce")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        key.verify(base64.b64decode(signature, validate=True), canonical(method, target, timestamp, nonce, digest))
    except (InvalidSignature, ValueError):
        raise SignatureError("wrong signature") from None
    return nonce


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Enroll(_Message):
    token: str = Field(min_length=20, max_length=100, description="the one-time enrollment token")
    public_key: str = Field(min_length=40, max_length=60, description="raw Ed25519 public key, base64")
    agent_version: Text = Field(max_length=40)


class Enrolled(_Message):
    site_id: uuid.UUID
    name: str


class Hardware(_Message):
    cpus: int = Field(ge=0, le=4096)
    memory_gb: float = Field(ge=0, le=1e6)
    gpus: list[str] = Field(default_factory=list, max_length=64)


class DatasetSummary(_Message):
    """All a server learns of a site's dataset: image counts per split and class, sizes and a fingerprint."""

    name: str = Field(pattern=DATASET_NAME)
    format: Literal["image-folder", "csv", "npz"]
    counts: dict[Literal["train", "validation", "test"], dict[Literal["negative", "positive"], int]]
    image_sizes: list[str] = Field(
        default_factory=list, max_length=20, description="e.g. '1024x1024', most common first"
    )
    skipped: int = Field(0, ge=0, description="files the loader could not use")
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 over the sorted image content hashes")
    split_seed: int = Field(ge=0, description="the seed of the site's own train/validation/test split")


class Heartbeat(_Message):
    agent_version: Text = Field(max_length=40)
    hardware: Hardware
    datasets: list[DatasetSummary] = Field(max_length=50)
    busy_with: uuid.UUID | None = Field(None, description="the task being worked on, if any")


class DpSettings(_Message):
    """The run's differential privacy, so that the site knows what it spends: at sample level it trains with
    DP-SGD (Abadi et al., 2016) at these settings; at client level the server clips and noises its update."""

    level: Literal["sample", "client"]
    noise_multiplier: float = Field(gt=0, le=100)
    clip_norm: float = Field(gt=0, le=1000)
    delta: float = Field(gt=0, lt=0.01)


#: base64 of at most a few hundred bytes: a site's public keys (64), one Shamir share (68), one sealed share pair
_Blob = Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z0-9+/=]*$")]
_Peers = Annotated[dict[Annotated[str, Field(max_length=64)], _Blob], Field(max_length=100)]
_Sites = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)]


class SecAggTask(_Message):
    """One step of secure aggregation (SecAgg+) for a site: its inputs, relayed by the server, which cannot use them.

    ``session`` names the sum these keys serve (a round's updates, or its BatchNorm statistics); every step of one
    session runs on one set of fresh keys that the agent keeps in memory.
    """

    session: Literal["train", "statistics"]
    threshold: int = Field(ge=2, le=100)
    clip_range: float = Field(gt=0, le=1e4)
    weight_cap: int = Field(ge=1, le=10_000_000)
    roster: _Peers | None = Field(None, description="share step: each site's public keys, base64")
    inbox: _Peers | None = Field(None, description="masking step: the sealed shares other sites sent this site")
    sites: int | None = Field(None, ge=1, le=100, description="masking step: sites in the sum (distributed DP)")
    survivors: _Sites | None = Field(None, description="unmask step: sites whose masked vector arrived")
    dropped: _Sites | None = Field(None, description="unmask step: sites that shared keys but sent nothing")


class SecAggAnswer(_Message):
    """A site's answer to a secure-aggregation step (base64 throughout)."""

    public_keys: _Blob | None = None
    outbox: _Peers | None = Field(None, description="a sealed pair of shares for each neighbour")
    seed_shares: _Peers | None = Field(None, description="its shares of the survivors' self-mask seeds")
    key_shares: _Peers | None = Field(None, description="its shares of the dropped sites' mask keys")


class TaskSettings(_Message):
    """What a site needs to run a task; never a server path or another site's data."""

    image_size: int
    model: dict[str, object] = Field(description="RunConfig.model as JSON")
    local_epochs: int
    seed: int
    rounds: int | None = Field(None, description="local task: train rounds x local_epochs epochs, as the run did")
    class_weight: dict[int, float] | None = None
    dp: DpSettings | None = None
    secagg: SecAggTask | None = None


class SiteTask(_Message):
    id: uuid.UUID
    run_id: uuid.UUID
    round: int
    client_id: str = Field(description="the site's client number in this run; seeds its local training")
    kind: Literal["train", "statistics", "evaluate", "advertise", "share", "unmask", "local"]
    dataset: str
    weights_sha256: str = Field(
        description="SHA-256 of the global weights file (local: the run's initial weights): "
        "GET /api/site/weights/{sha256}"
    )
    settings: TaskSettings
    deadline: datetime


class UploadState(_Message):
    """Where an upload of a weights file stands on the server, and the limits a chunk must keep to.

    A file goes up in chunks, ``PUT /api/site/blobs/{sha256}?offset=N&size=S``, each signed over its own body; after
    a broken connection the agent asks for this state and goes on from ``offset``.
    """

    stored: bool = Field(description="the server holds this content under its name: nothing (more) to send")
    offset: int = Field(ge=0, description="bytes of this site's partial upload the server holds")
    max_bytes: int = Field(ge=1, description="the largest file the server accepts")
    chunk_bytes: int = Field(ge=1, description="the largest chunk (one request's body) the server accepts")


class TaskResult(_Message):
    """A site's answer: its weights file (uploaded first, by hash) and/or its evaluation counts, and metrics."""

    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    num_examples: int = Field(ge=0, le=10**9)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=100)
    validation: dict[str, list[int] | int] | None = Field(
        None, description="GridCounts.as_lists(), validation part (evaluate: the global model; local: the site's own)"
    )
    test: dict[str, list[int] | int] | None = Field(None, description="GridCounts.as_lists() of the test part")
    error: Text | None = Field(None, max_length=2000, description="why the site could not do the task")
    secagg: SecAggAnswer | None = None
