"""Chunked, resumable uploads of weights files and ranged downloads through the API, with small limits."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy.orm import Session

from app.settings import Settings
from app.sites import blobs, uploads
from app.sites.protocol import OFFSET_HEADER, body_sha256
from tests.api.factories import add_experiment, add_run
from tests.api.sites import Agent, add_task

CHUNK = 4096
LIMIT = 40_000
CONTENT = bytes(range(256)) * 39  # 9,984 bytes: chunks at 0, 4,096 and 8,192, the last of 1,792 bytes
SHA = body_sha256(CONTENT)


@pytest.fixture
def small(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_chunk_bytes": CHUNK, "max_upload_bytes": LIMIT})


@pytest.fixture
def site(enroll: Callable[[str], Agent], make_client: Callable[..., TestClient], small: Settings) -> Agent:
    """An enrolled site whose requests go to the app with the small limits."""
    return dataclasses.replace(enroll("hospital-a"), http=make_client(small, headers={}))


def put(
    agent: Agent, offset: int, size: int | None = len(CONTENT), content: bytes = CONTENT, sha: str | None = None
) -> Response:
    """The chunk of ``content`` at ``offset`` (up to CHUNK bytes) as the agent sends it, named by default by the
    content's SHA-256; ``size`` None marks it as the last chunk."""
    query = f"offset={offset}" + ("" if size is None else f"&size={size}")
    target = f"/api/site/blobs/{sha or body_sha256(content)}?{query}"
    return agent.request("PUT", target, content[offset : offset + CHUNK])


def state(agent: Agent, sha: str = SHA) -> dict[str, object]:
    answer = agent.request("GET", f"/api/site/blobs/{sha}/upload")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def partials(settings: Settings, agent: Agent) -> list[str]:
    folder = blobs.partials(settings.artifacts) / agent.site_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_chunks_sent_in_order_assemble_the_file_under_its_name(site: Agent, small: Settings) -> None:
    before = state(site)

    answers = [put(site, offset) for offset in (0, 4096, 8192)]

    assert before == {"stored": False, "offset": 0, "max_bytes": LIMIT, "chunk_bytes": CHUNK}
    assert [a.status_code for a in answers] == [202, 202, 201]
    assert [a.json()["offset"] for a in answers[:2]] == [4096, 8192]
    assert blobs.blob_path(small.artifacts, SHA).read_bytes() == CONTENT
    assert state(site)["stored"] is True
    assert partials(small, site) == []


def test_an_upload_resumes_at_the_offset_the_server_reports(site: Agent, small: Settings) -> None:
    put(site, 0)
    put(site, 4096)

    held = state(site)["offset"]
    last = put(site, 8192)

    assert held == 8192
    assert last.status_code == 201
    assert blobs.blob_path(small.artifacts, SHA).read_bytes() == CONTENT


def test_a_chunk_at_a_wrong_offset_gets_409_with_the_offset_to_use_and_changes_nothing(
    site: Agent, small: Settings
) -> None:
    put(site, 0)

    skipped = put(site, 8192)
    repeated = put(site, 0)

    for refused in (skipped, repeated):
        assert refused.status_code == 409
        assert refused.headers[OFFSET_HEADER] == "4096" and "offset 4096" in refused.json()["detail"]
    assert state(site)["offset"] == 4096
    assert [put(site, 4096).status_code, put(site, 8192).status_code] == [202, 201]
    assert blobs.blob_path(small.artifacts, SHA).read_bytes() == CONTENT


def test_a_chunk_at_an_offset_with_no_upload_started_gets_409_at_zero(site: Agent) -> None:
    refused = put(site, 4096)

    assert (refused.status_code, refused.headers[OFFSET_HEADER]) == (409, "0")


def test_a_file_whose_content_does_not_match_its_name_is_discarded_with_400(site: Agent, small: Settings) -> None:
    forged = CONTENT[:-1] + b"!"  # the same size, another SHA-256
    put(site, 0, content=forged, sha=SHA)
    put(site, 4096, content=forged, sha=SHA)

    last = put(site, 8192, content=forged, sha=SHA)

    assert last.status_code == 400
    assert body_sha256(forged) in last.json()["detail"] and "discarded" in last.json()["detail"]
    assert state(site) == {"stored": False, "offset": 0, "max_bytes": LIMIT, "chunk_bytes": CHUNK}
    assert not blobs.blob_path(small.artifacts, SHA).exists() and partials(small, site) == []


def test_another_site_can_neither_see_nor_extend_nor_finish_a_sites_partial_upload(
    site: Agent, enroll: Callable[[str], Agent], small: Settings
) -> None:
    other = dataclasses.replace(enroll("hospital-b"), http=site.http)
    put(site, 0)
    put(site, 4096)

    seen = state(other)
    extended = put(other, 8192)
    impostor = dataclasses.replace(other, site_id=site.site_id)  # another site's id, signed with its own key
    finished = put(impostor, 8192)

    assert seen["offset"] == 0
    assert (extended.status_code, extended.headers[OFFSET_HEADER]) == (409, "0")
    assert finished.status_code == 401
    assert state(site)["offset"] == 8192 and partials(small, other) == []
    assert put(site, 8192).status_code == 201


def test_uploads_over_the_limits_get_413(site: Agent) -> None:
    big = bytes(range(256)) * 160  # 40,960 bytes: over the 40,000-byte limit
    sha = body_sha256(big)

    declared = put(site, 0, size=len(big), content=big)
    chunk = site.request("PUT", f"/api/site/blobs/{sha}?offset=0&size={LIMIT}", big[: CHUNK + 1])
    for offset in range(0, 36864, CHUNK):  # a size within the limit, then a last chunk that ends past it
        put(site, offset, size=LIMIT, content=big)
    past = put(site, 36864, size=None, content=big)

    assert declared.status_code == 413 and f"{LIMIT:,}-byte limit" in declared.json()["detail"]
    assert chunk.status_code == 413
    assert past.status_code == 413 and state(site, sha)["offset"] == 36864


def test_a_stored_file_is_not_stored_again(site: Agent, small: Settings) -> None:
    for offset in (0, 4096, 8192):
        put(site, offset)
    stored = blobs.blob_path(small.artifacts, SHA)
    written = stored.stat().st_mtime_ns

    asked = state(site)
    again = put(site, 0)
    whole = site.request("PUT", f"/api/site/blobs/{SHA}", CONTENT[:CHUNK])  # any chunk: the content is there

    assert asked["stored"] is True
    assert (again.status_code, again.json()["stored"], whole.status_code) == (200, True, 200)
    assert stored.stat().st_mtime_ns == written and partials(small, site) == []


def test_a_site_keeps_at_most_two_partial_uploads_and_stale_ones_are_swept(
    site: Agent, enroll: Callable[[str], Agent], small: Settings
) -> None:
    files = [bytes([i]) * len(CONTENT) for i in range(4)]
    for i, content in enumerate(files[:2]):
        put(site, 0, content=content)
        path = blobs.partials(small.artifacts) / site.site_id / body_sha256(content)
        os.utime(path, (time.time() - 10 + i, time.time() - 10 + i))  # the first is the least recently written
    other = dataclasses.replace(enroll("hospital-b"), http=site.http)
    put(other, 0, content=files[3])
    abandoned = blobs.partials(small.artifacts) / other.site_id / body_sha256(files[3])
    stray = blobs.incoming(small.artifacts) / "left-by-a-dead-process"
    stray.write_bytes(b"x")
    day_old = time.time() - uploads.STALE_AFTER_S - 1
    for path in (abandoned, stray):
        os.utime(path, (day_old, day_old))

    put(site, 0, content=files[2])

    assert partials(small, site) == sorted(body_sha256(c) for c in files[1:3])
    assert not stray.exists() and not abandoned.exists()


def test_a_download_resumes_with_a_range_request(site: Agent, session: Session, small: Settings) -> None:
    path = small.artifacts / "global.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CONTENT)
    sha = blobs.put_file(small.artifacts, path)
    add_task(session, site.site_id, add_run(session, add_experiment(session)).id, sha)

    rest = site.request("GET", f"/api/site/weights/{sha}", headers={"Range": "bytes=5000-"})
    past = site.request("GET", f"/api/site/weights/{sha}", headers={"Range": f"bytes={len(CONTENT)}-"})

    assert rest.status_code == 206 and rest.content == CONTENT[5000:]
    assert rest.headers["Content-Range"] == f"bytes 5000-{len(CONTENT) - 1}/{len(CONTENT)}"
    assert past.status_code == 416
