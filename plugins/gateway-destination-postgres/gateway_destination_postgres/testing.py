"""A PostgreSQL server of its own, for tests and benchmarks: ``initdb`` in a temporary folder,
its own port on 127.0.0.1, and a login role that is not a superuser and owns one database (what
the warehouse destination should run as).

    with TemporaryPostgres() as pg:
        config = f'dsn = "{pg.dsn}"'

It uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/<v>/bin``,
or ``$GATEWAY_PG_BIN``). PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` system user (``runuser``), which the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["TemporaryPostgres", "server_binaries"]

ROLE = "gateway"
DATABASE = "warehouse"


def server_binaries() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: ``$GATEWAY_PG_BIN``, else the newest
    ``/usr/lib/postgresql/*/bin``, else the one on ``PATH``."""
    if os.environ.get("GATEWAY_PG_BIN"):
        return Path(os.environ["GATEWAY_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("no PostgreSQL server binaries: apt-get install -y postgresql (or set GATEWAY_PG_BIN)")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPostgres:
    """A throwaway PostgreSQL server. ``durable=False`` (the default) turns fsync off: tests
    kill the gateway, never the database."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = server_binaries()
        self.port = _free_port()
        self.password = secrets.token_hex(12)
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.folder / "data"
        self.sockets = self.folder / "run"
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        """Password login over TCP as the non-superuser role that owns the database."""
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def admin(self, dbname: str = DATABASE) -> psycopg.Connection[Any]:
        """A superuser connection over the server's own Unix socket (for setup and checks)."""
        return psycopg.connect(host=str(self.sockets), port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> TemporaryPostgres:
        self.sockets.mkdir(parents=True)
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        settings = [f"-p {self.port}", f"-k {self.sockets}", "-c listen_addresses=127.0.0.1"]
        if not self.durable:
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-o",
            " ".join(settings),
            "start",
        )
        with self.admin("postgres") as conn:
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")  # NOSUPERUSER NOCREATEDB
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        return self

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError):  # not running
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
