"""A throwaway PostgreSQL cluster: `initdb` and `pg_ctl` into a temporary folder, on a free loopback port.

PostgreSQL refuses to run as root, so under root the server runs as `nobody` (the folder is given to it).
The binaries come from `PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
Connections from 127.0.0.1 are trusted: the cluster lives only as long as the tests.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port

SUPERUSER = "apparel"


def binaries() -> Path | None:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return versions[-1] if versions else None


@dataclass
class PostgresCluster:
    folder: Path
    port: int
    bin_dir: Path
    user: str | None  # the operating-system user the server runs as; None: this process's
    databases: list[str] = field(default_factory=list)

    def run(self, *command: str) -> None:
        result = subprocess.run(command, capture_output=True, text=True, user=self.user, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {result.stderr.strip()}")

    def url(self, database: str) -> str:
        """As the README documents it: `postgresql://` (psycopg, the serve extra's driver)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self.run(
            str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name
        )
        self.databases.append(name)
        return self.url(name)

    @classmethod
    def start(cls) -> "PostgresCluster":
        bin_dir = binaries()
        if bin_dir is None:
            raise FileNotFoundError("no PostgreSQL server found: apt-get install postgresql, or set PG_BIN")
        user = "nobody" if os.geteuid() == 0 else None
        folder = Path(tempfile.mkdtemp(prefix="postgres-"))
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        cluster = cls(folder, free_port(), bin_dir, user)
        try:
            initdb = [str(bin_dir / "initdb"), "-D", "data", "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"]
            cluster.run(*initdb, "--no-sync")
            options = f"-p {cluster.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            cluster.run(
                str(bin_dir / "pg_ctl"), "-D", "data", "-l", "server.log", "-o", options, "-w", "start"
            )
        except BaseException:
            cluster.stop()  # a server half started, and the folder
            raise
        return cluster

    def stop(self) -> None:
        subprocess.run([str(self.bin_dir / "pg_ctl"), "-D", "data", "-m", "fast", "-w", "stop"],
                       capture_output=True, user=self.user, cwd=self.folder)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
