"""A throwaway PostgreSQL server on 127.0.0.1 for the tests (Debian's `postgresql` package): `initdb` in a temporary
folder (as the `postgres` user when run as root: initdb refuses root), trust authentication on loopback only, a free
port. `.ci/run` starts one for the whole run and exports its URL as TEST_POSTGRES_URL; without it, the tests' fixture
starts one of its own.

    python tests/pg_server.py start FOLDER      # prints the server's URL (postgresql://postgres@127.0.0.1:PORT)
    python tests/pg_server.py stop FOLDER
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import uuid


def binary(name: str) -> str | None:
    """A PostgreSQL program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> bool:
    return all(binary(name) for name in ("initdb", "pg_ctl"))


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: str) -> str:
    """Start a server whose files live in `folder`; returns its URL (database name to be appended)."""
    os.makedirs(folder, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = os.path.join(folder, "data"), _free_port()
    subprocess.run(_as_postgres([binary("initdb"), "-D", data, "--auth=trust", "-U", "postgres", "--no-locale",
                                 "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
    subprocess.run(_as_postgres([binary("pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(folder, "log"),
                                 "-w", "start"]), check=True, capture_output=True)
    return f"postgresql://postgres@127.0.0.1:{port}"


def stop(folder: str) -> None:
    data = os.path.join(folder, "data")
    if os.path.isdir(data):
        subprocess.run(_as_postgres([binary("pg_ctl"), "-D", data, "-m", "immediate", "stop"]), capture_output=True)


def new_database(url: str) -> str:
    """A fresh, empty database on the server at `url`; returns its URL."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(f"{url}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{url}/{name}"


if __name__ == "__main__":
    action, folder = sys.argv[1], sys.argv[2]
    if action == "start":
        print(start(folder))
    else:
        stop(folder)
