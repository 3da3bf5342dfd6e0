"""A real PostgreSQL server on loopback (Debian's `postgresql`), for the shared study of parallel
tuning: initdb into a temporary folder, password authentication over TCP, one database."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .control_plane import free_port

USER, PASSWORD, DATABASE = "kompress", "s3cret-study-pw", "studies"


def binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """`url` is what a Secret would hold; `stop()` ends the server and removes its data."""

    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: scripts/k8s-test-assets installs Debian's postgresql")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="kompress-pg-"))
        data = self.folder / "data"
        password_file = self.folder / "pw"
        password_file.write_text(PASSWORD)
        # PostgreSQL refuses to run as root: as root, run it as Debian's postgres user.
        self._as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if self._as:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        subprocess.run([*self._as, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={password_file}",
                        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8"], check=True, capture_output=True)
        self.log = self.folder / "server.log"
        self.process = subprocess.Popen(
            [*self._as, str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.folder}", "-c", "max_connections=200", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        self._wait_ready(bin_dir)
        subprocess.run([*self._as, str(bin_dir / "createdb"), "-h", str(self.folder), "-p", str(self.port), "-U", USER, DATABASE],
                       check=True, capture_output=True)
        self.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _wait_ready(self, bin_dir: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"postgres did not start in 60 s: {self.log.read_text()[-2000:]}")

    def new_database(self, name: str) -> str:
        """A fresh database on this server, for a test that needs its own studies."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
