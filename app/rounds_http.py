"""``GET /api/runs/{id}/rounds`` as HTTP caches expect it: an ETag per content, 304 when it is unchanged, and gzip
made once per content instead of once per viewer (a 10-client x 100-round run is ~500 kB of JSON)."""

from __future__ import annotations

import gzip
import hashlib
import uuid

from fastapi import Request, Response
from sqlalchemy.orm import Session

from app import results, runs
from app.memo import SingleFlightLRU

GZIP_LEVEL = 6
MIN_GZIP_BYTES = 1024  # below this, compression costs more than it saves


_compressed = SingleFlightLRU()  # gzipped bodies by ETag


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags or "*" in tags


def rounds_response(*, request: Request, session: Session, run_id: uuid.UUID, since: int) -> Response:
    """The run and its rounds after ``since``; stored rounds never change, so the run's own row and ``since``
    determine the body, and a matching If-None-Match is answered without reading a round."""
    run = runs.get_run(session=session, run_id=run_id)
    head = results.run_read(run).model_dump_json().encode()
    etag = '"' + hashlib.blake2b(b"%d|" % since + head, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    body = b'{"run":' + head + b',"rounds":' + results.rounds_json(session=session, run=run, since=since) + b"}"
    if len(body) >= MIN_GZIP_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            _compressed.get(etag, lambda: gzip.compress(body, GZIP_LEVEL, mtime=0)),
            media_type="application/json",
            headers=headers | {"Content-Encoding": "gzip"},
        )
    return Response(body, media_type="application/json", headers=headers)
