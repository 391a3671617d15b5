"""A hospital site's side of the wire in API tests: it signs each request as the agent does."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from app.models import Site, SiteTask, utcnow
from app.sites.protocol import body_sha256, sign


@dataclass
class Agent:
    """A site's side of the wire, signing its requests as the real agent does."""

    http: TestClient
    site_id: str
    key: Ed25519PrivateKey

    def request(self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        signed = sign(self.key, self.site_id, method, target, body_sha256(body))
        return self.http.request(method, target, content=body, headers=signed | (headers or {}))

    def post(self, target: str, payload: object) -> Response:
        return self.request("POST", target, json.dumps(payload).encode(), {"content-type": "application/json"})


def add_task(session: Session, site_id: str, run_id: uuid.UUID, weights: str, **fields: object) -> SiteTask:
    """A training task of round 1 for the site, starting from the global weights with SHA-256 ``weights``;
    ``fields`` override any column (``kind``, ``round``, ``status``, ``deadline``)."""
    columns: dict[str, object] = {
        "run_id": run_id,
        "round": 1,
        "client_id": "1",
        "site_id": uuid.UUID(site_id),
        "kind": "train",
        "dataset": "chest",
        "weights_sha256": weights,
        "settings": {"image_size": 32, "model": {}, "local_epochs": 1, "seed": 1},
        "deadline": utcnow() + timedelta(minutes=5),
    }
    task = SiteTask(**(columns | fields))
    session.add(task)
    session.commit()
    return task


#: what an agent declares for its dataset: images per split and class
COUNTS = {"train": {"negative": 30, "positive": 30}, "test": {"negative": 10, "positive": 10}}


def add_site(
    session: Session,
    name: str,
    *,
    online: bool = True,
    datasets: tuple[str, ...] = ("chest",),
    counts: dict[str, dict[str, int]] = COUNTS,
) -> Site:
    """An enrolled site whose agent has declared ``datasets`` and, if ``online``, was heard from just now."""
    site = Site(
        name=name,
        public_key="A" * 44,
        last_seen_at=utcnow() if online else None,
        datasets=[{"name": d, "counts": counts} for d in datasets],
    )
    session.add(site)
    session.commit()
    return site
