"""Migrations and queries over a PostgreSQL that accepts only TLS, reached with sslmode=verify-full and certificates
the test makes (a throwaway cluster started with the Debian binaries as the postgres user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import OperationalError

from app.db import get_engine
from app.migrate import upgrade
from app.tls.certs import ensure_server
from tests.e2e.stack import free_port

PG_ROOT = Path("/usr/lib/postgresql")
PG_USER = "postgres"  # initdb and postgres refuse to run as root


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL bin folder; missing tools skip the test here and fail it under CI (CI=true)."""
    folders = sorted((p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()), key=lambda p: int(p.parent.name))
    missing = [] if folders else [f"{PG_ROOT}/*/bin/initdb (apt-get install postgresql)"]
    if shutil.which("runuser") is None:
        missing.append("runuser (util-linux)")
    if not missing:
        return folders[-1]
    message = f"cannot start a throwaway PostgreSQL: missing {', '.join(missing)}"
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"{message}; CI must run these tests", pytrace=False)
    pytest.skip(message)


def as_postgres(folder: Path, *args: str, check: bool = True) -> None:
    """Run a PostgreSQL tool as the postgres user, from a folder it may enter; its output is kept for the failure."""
    command = ["runuser", "-u", PG_USER, "--", *args]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")


def configure(data: Path, folder: Path, tls: Path, port: int) -> None:
    """TLS on, loopback only, and a pg_hba.conf that trusts TLS connections and rejects every plain one."""
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(folder),
        "ssl": "on",
        "ssl_cert_file": str(tls / "server.pem"),
        "ssl_key_file": str(tls / "server.key"),
        "fsync": "off",  # a throwaway cluster: start and migrate faster
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())
    (data / "pg_hba.conf").write_text(
        "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n"
    )


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[int, Path]]:
    """(port, CA file) of a PostgreSQL on 127.0.0.1 that refuses connections without TLS; stopped and deleted after."""
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="fedlens-pgtls-"))  # under /tmp: pytest's tmp_path is closed to postgres
    data, log, port = folder / "data", folder / "log", free_port()
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "15"]
    started = False
    try:
        cert = ensure_server(folder / "tls", ["localhost", "127.0.0.1"])
        assert cert.ca is not None
        for path in (folder, folder / "tls", *(folder / "tls").iterdir()):
            shutil.chown(path, PG_USER, PG_USER)  # the key stays 0600, now owned by the server that reads it
        as_postgres(folder, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "--no-sync")
        configure(data, folder, folder / "tls", port)
        started = True
        try:
            as_postgres(folder, *pg_ctl, "-l", str(log), "start")
        except RuntimeError as error:  # the reason is in the server's log, which the finalizer deletes
            raise RuntimeError(f"{error}\nserver log:\n{log.read_text()}") from error
        yield port, cert.ca
    finally:
        if started:  # also after a start that timed out: a postmaster may be up; with none, pg_ctl only complains
            as_postgres(folder, *pg_ctl, "-m", "immediate", "stop", check=False)
        shutil.rmtree(folder)


def url(port: int, ca: Path, sslmode: str = "verify-full") -> str:
    return f"postgresql+psycopg://postgres@localhost:{port}/postgres?sslmode={sslmode}&sslrootcert={ca}"


def test_migrations_and_queries_run_over_verify_full(tls_postgres: tuple[int, Path]) -> None:
    port, ca = tls_postgres
    database = url(port, ca)
    upgrade(database)
    engine = get_engine(database)
    try:
        with engine.connect() as conn:
            encrypted = conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar_one()
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert encrypted is True
    assert {"alembic_version", "run", "fl_round", "round_metric"} <= tables


def test_verify_full_refuses_a_ca_that_did_not_sign_the_server_certificate(
    tls_postgres: tuple[int, Path], tmp_path: Path
) -> None:
    port, _ = tls_postgres
    other_ca = ensure_server(tmp_path / "other", ["localhost"]).ca
    assert other_ca is not None
    engine = create_engine(url(port, other_ca))
    with pytest.raises(OperationalError, match="certificate verify failed"), engine.connect():
        pass


def test_the_server_refuses_a_connection_without_tls(tls_postgres: tuple[int, Path]) -> None:
    port, ca = tls_postgres
    engine = create_engine(url(port, ca, sslmode="disable"))
    with pytest.raises(OperationalError, match=r"pg_hba\.conf rejects connection .* no encryption"), engine.connect():
        pass
