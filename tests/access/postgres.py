"""A throwaway PostgreSQL server: Debian's postgresql binaries, a cluster initialised in a
temporary directory, run as the `postgres` user when we are root (PostgreSQL refuses to
run as root). Used by the tests' fixture and by bench/access.py."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator


class Unavailable(Exception):
    """Why no server could be started (the caller skips with this reason)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the server's URL (trust authentication on 127.0.0.1); stops it after."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise Unavailable("PostgreSQL is not installed (apt-get install -y postgresql)")
    bin_dir = os.path.dirname(found[-1])
    prefix: list[str] = []
    data = tempfile.mkdtemp(prefix="flotilla-pg-")
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(data, ignore_errors=True)
            raise Unavailable("running as root and there is no `postgres` user") from None
        os.chown(data, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run(prefix + list(args), check=True, capture_output=True, timeout=60)

    try:
        run(f"{bin_dir}/initdb", "-D", f"{data}/db", "--auth=trust", "-U", "postgres")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(
            f"{bin_dir}/pg_ctl",
            "-D",
            f"{data}/db",
            "-o",
            options,
            "-w",
            "-l",
            f"{data}/log",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(data, ignore_errors=True)
        reason = exc.stderr.decode(errors="replace").strip()[:200]
        raise Unavailable(f"PostgreSQL did not start: {reason}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            prefix + [f"{bin_dir}/pg_ctl", "-D", f"{data}/db", "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)
