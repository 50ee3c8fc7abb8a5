"""A throwaway PostgreSQL cluster for fault tests: ours to stop, restart and delete.

The machine's server on 127.0.0.1:5432 is shared and must never be stopped, so
a test that takes the database away starts its own cluster with ``initdb`` on a
free loopback port: trust auth, listening on 127.0.0.1 only, its unix socket in
its own directory, ``fsync`` off (nothing in it needs to survive a crash).

``initdb`` refuses to run as root. Under root (this machine image and its CI
run as root) every server command runs as the ``postgres`` user, switched to by
``subprocess`` itself (``user=``/``group=``: no ``runuser`` or ``sudo`` needed),
in a directory under the system temp dir that the user owns: pytest's
``tmp_path`` lies under ``/tmp/pytest-of-root`` (mode 0700), which that user
cannot enter. As any other user the cluster lives in ``tmp_path``.

:func:`throwaway_cluster` always stops the server (``pg_ctl stop -m immediate``,
then SIGKILL to the postmaster it started if that did not work) and deletes its
files, whatever happened in the test. Missing binaries skip locally and fail
under ``CI=true``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from conftest import require

SERVER_USER = "postgres"
PASSWORD = "pw-never-shown"
START_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 60

# fsync off is safe here: an immediate stop kills the processes, not the kernel,
# so written WAL survives in the page cache. synchronous_commit must stay on: off,
# an acknowledged commit can still sit in WAL buffers and die with the server,
# and the test would see committed rows vanish after the restart.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "20",
    "shared_buffers": "16MB",
    "log_min_messages": "warning",
}

_LIVE: set[int] = set()  # postmaster pids started here and not yet stopped


def _kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _LIVE.discard(pid)


@atexit.register
def _kill_leftovers() -> None:  # a last resort if a finalizer never ran
    for pid in list(_LIVE):
        _kill(pid)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    PATH first (``/usr/local/bin`` links them here), then Debian's
    ``/usr/lib/postgresql/<version>/bin``, newest version first.
    """
    on_path = shutil.which("initdb")
    if on_path is not None:
        bin_dir = Path(on_path).resolve().parent
        if all((bin_dir / b).exists() for b in ("pg_ctl", "postgres")):
            return bin_dir
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    return debian[-1].parent if debian else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PgCluster:
    """One throwaway cluster: its files, its port, the user its server runs as."""

    bin_dir: Path
    base: Path  # owned by the server user; holds data/, the log and the socket
    port: int
    run_as: pwd.struct_passwd | None  # the server user when we are root
    postmaster_pid: int | None = field(default=None)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for the app (trust auth never asks for the password)."""
        credentials = f"{SERVER_USER}:{PASSWORD}"
        return f"postgresql+psycopg://{credentials}@127.0.0.1:{self.port}/postgres"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the server user; fails the test on error."""
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C",
            "LC_ALL": "C",
            "HOME": str(self.base),
        }  # nothing else inherited: no PG* variable can redirect the command
        user = self.run_as
        result = subprocess.run(
            command,
            cwd=self.base,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if result.returncode != 0:
            pytest.fail(
                f"{' '.join(argv)} exited {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{self.log_tail()}"
            )
        return result

    def init(self) -> None:
        """``initdb``: trust auth, superuser ``postgres``, C locale, no fsync."""
        self.run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{self.base}'"}
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# throwaway test cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def accepts_connections(self) -> bool:
        """Whether a TCP connection to the cluster's port logs in."""
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> float:
        """``pg_ctl start`` on this cluster's port; the seconds until it answers."""
        begun = time.monotonic()
        self.run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}",
        )  # fmt: skip
        pid_line = (self.data / "postmaster.pid").read_text().splitlines()[0]
        self.postmaster_pid = int(pid_line)
        _LIVE.add(self.postmaster_pid)
        while not self.accepts_connections():
            if time.monotonic() - begun > START_TIMEOUT_S:
                pytest.fail(f"the cluster does not answer:\n{self.log_tail()}")
            time.sleep(0.1)
        return time.monotonic() - begun

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: the server goes away without a checkpoint."""
        self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        if self.postmaster_pid is not None:
            _LIVE.discard(self.postmaster_pid)
        self.postmaster_pid = None

    def destroy(self) -> None:
        """Stop the server if it runs (SIGKILL as a last resort); delete the files."""
        if self.postmaster_pid is not None:
            with suppress(Exception, pytest.fail.Exception):  # the files go anyway
                self.stop_immediate()
            if self.postmaster_pid is not None:
                _kill(self.postmaster_pid)
        shutil.rmtree(self.base, ignore_errors=True)


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: ``postgres`` when we are root, else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        require(False, f"running as root and there is no {SERVER_USER!r} user")
        raise  # unreachable: require fails or skips


def _open_temp_dir() -> str:
    """The system temp dir if every user can enter it (and its parents), or /tmp."""
    temp = Path(tempfile.gettempdir()).resolve()
    if all(p.stat().st_mode & stat.S_IXOTH for p in (temp, *temp.parents)):
        return str(temp)
    return "/tmp"  # noqa: S108 (mkdtemp: a private, unpredictable name)


@contextmanager
def throwaway_cluster(tmp_path: Path) -> Iterator[PgCluster]:
    """A started cluster, stopped and deleted when the block exits."""
    bin_dir = find_bin_dir()
    require(bin_dir is not None, "PostgreSQL server binaries (initdb) not found")
    assert bin_dir is not None
    run_as = _server_user()
    if run_as is None:
        base = tmp_path / "pg"
        base.mkdir()
    else:  # a directory the server user can reach and owns
        base = Path(tempfile.mkdtemp(prefix="crsmon-pg-", dir=_open_temp_dir()))
        os.chown(base, run_as.pw_uid, run_as.pw_gid)
    cluster = PgCluster(bin_dir, base, free_port(), run_as)
    try:
        cluster.init()
        for _ in range(3):  # the free port may be taken before the server binds it
            try:
                cluster.start()
                break
            except pytest.fail.Exception:
                if "could not bind" not in cluster.log_tail():
                    raise
                cluster.port = free_port()
        else:
            pytest.fail(f"no free port for the cluster:\n{cluster.log_tail()}")
        yield cluster
    finally:
        cluster.destroy()
