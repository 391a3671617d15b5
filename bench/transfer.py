"""A weights file between a site agent and the API over loopback HTTPS: in chunks vs in one request.

The real API runs as `fedlens api --tls` (its own process, on PostgreSQL and Redis as in the tests' slot) and a
site enrolled with its certificate's fingerprint talks to it with the agent's SiteClient. Upload: 8 MiB chunks
read from the file, each signed and appended to the site's partial file, the whole file hashed again at the end,
vs what the old agent sent: the file's bytes in memory, in one request.
Download: streamed to the cache file, hashed as it arrives (SiteClient.weights) vs the whole body read into
memory, hashed and written, as the old agent did. ABBA order over ``--repeats``; then one more of each under
tracemalloc for the agent's peak Python memory.
Prints chunked_over_single_upload=<ratio> and streamed_over_single_download=<ratio> (median times) last.
Usage: python -m bench.transfer [--mib 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from app.migrate import upgrade
from app.sites import blobs
from tests.api.factories import add_experiment, add_run
from tests.api.sites import add_task
from tests.e2e.stack import Stack
from tests.services import database_name, ensure_database, postgres_url, redis_url
from worker.site.connection import CHUNK_BYTES, SiteClient
from worker.site.enrollment import enroll
from worker.site.identity import SiteIdentity

MIB = 2**20


def _deployment(folder: Path, size: int) -> Stack:
    """``fedlens api --tls`` on a fresh database, taking a file of ``size`` bytes in one request."""
    database = postgres_url(database_name("fedlens_bench_transfer"))
    ensure_database(database_name("fedlens_bench_transfer"), fresh=True)
    upgrade(database)
    env = {
        "FEDLENS_DATA_DIR": str(folder / "server"),
        "FEDLENS_DATABASE_URL": database,
        "FEDLENS_BROKER_URL": redis_url("api"),
        "FEDLENS_MAX_CHUNK_BYTES": str(size),
        "FEDLENS_MAX_UPLOAD_BYTES": str(size),
    }
    stack = Stack(folder, env)
    stack.start_api(tls=True)
    return stack


def _enroll(stack: Stack, folder: Path) -> SiteIdentity:
    invitation = stack.http.post("/api/sites", json={"name": "hospital-a"}).json()
    token, fingerprint = invitation["enrollment_token"], invitation["fingerprint"]
    return enroll(server=stack.url, token=token, fingerprint=fingerprint, folder=folder, insecure_http=False)


def _publish(stack: Stack, artifacts: Path, site: SiteIdentity, path: Path) -> str:
    """Global weights as the orchestrator publishes them, with a task that lets ``site`` download them."""
    sha256 = blobs.put_file(artifacts, path)
    with stack.database() as session:
        add_task(session, site.site_id, add_run(session, add_experiment(session)).id, sha256)
    return sha256


def _chunked(artifacts: Path, client: SiteClient, path: Path, sha256: str) -> Callable[[], None]:
    def run() -> None:
        client.upload(path)
        blobs.blob_path(artifacts, sha256).unlink()  # stored afresh by the next run

    return run


def _single(artifacts: Path, client: SiteClient, path: Path, sha256: str) -> Callable[[], None]:
    def run() -> None:
        body, target = path.read_bytes(), f"/api/site/blobs/{sha256}"
        client.request("uploading weights", "PUT", target, body=body, content_type="application/octet-stream")
        blobs.blob_path(artifacts, sha256).unlink()

    return run


def _streamed(client: SiteClient, sha256: str, target: Path) -> Callable[[], None]:
    def run() -> None:
        client.weights(sha256, target)
        target.unlink()

    return run


def _whole(client: SiteClient, sha256: str, target: Path) -> Callable[[], None]:
    def run() -> None:
        data = client.request("downloading global weights", "GET", f"/api/site/weights/{sha256}").content
        assert hashlib.sha256(data).hexdigest() == sha256
        target.write_bytes(data)
        target.unlink()

    return run


def _timed(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each, in ABBA order so that a drift in the machine's load touches both alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - started)
    return times


def _peak_mib(run: Callable[[], None]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the weights file")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        folder = Path(tmp)
        stack = _deployment(folder, size)
        artifacts = folder / "server" / "artifacts"
        try:
            site = _enroll(stack, folder / "site")
            client = SiteClient(site)
            data = os.urandom(size)
            path = folder / "update.npz"
            path.write_bytes(data)
            sha256 = hashlib.sha256(data).hexdigest()
            (folder / "global.npz").write_bytes(os.urandom(size))
            published = _publish(stack, artifacts, site, folder / "global.npz")
            target = folder / "download.npz"
            runs = {
                f"upload in {CHUNK_BYTES // MIB} MiB chunks": _chunked(artifacts, client, path, sha256),
                "upload in one request": _single(artifacts, client, path, sha256),
                "download streamed to the file": _streamed(client, published, target),
                "download whole into memory": _whole(client, published, target),
            }
            times = _timed(runs, args.repeats)
            peaks = {name: _peak_mib(run) for name, run in runs.items()}
            client.close()
        finally:
            stack.stop()
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"{args.mib} MiB over loopback HTTPS, {args.repeats} runs each (median; MiB/s; peak Python memory)")
    for name, median in medians.items():
        print(f"  {name:32s} {median:6.2f} s  {args.mib / median:6.1f} MiB/s  peak {peaks[name]:6.1f} MiB")
    upload, download = list(medians.values())[:2], list(medians.values())[2:]
    print(f"chunked_over_single_upload={upload[0] / upload[1]:.2f}")
    print(f"streamed_over_single_download={download[0] / download[1]:.2f}")


if __name__ == "__main__":
    main()
