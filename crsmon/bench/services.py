"""The real processes a benchmark run drives, and what it reads off them.

A throwaway PostgreSQL database on the local server (dropped afterwards), a
private ``redis-server`` on a free loopback port (never the machine's shared
Redis), ``crsmon serve`` and ``crsmon worker`` processes, each in its own
process group and killed however the run ends. Peak RSS comes from each
process's ``VmHWM`` in ``/proc`` (Linux), read before it is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis


class BenchError(RuntimeError):
    """A service the benchmark needs did not start or answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, *, every: float = 0.05
) -> float:
    """Poll ``condition`` ``every`` seconds; the seconds it took. Raises
    BenchError on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


@dataclass
class Proc:
    """A started process, leader of its own group, and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def peak_rss_mb(self) -> float:
        """The largest peak RSS of the process and its children, in MB."""
        return max((_vm_hwm_mb(pid) for pid in _tree(self.popen.pid)), default=0.0)

    def stop(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [root], [root]
    while todo:
        pid = todo.pop()
        children = [c for c, p in parents.items() if p == pid]
        found += children
        todo += children
    return found


def _vm_hwm_mb(pid: int) -> float:
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Services:
    """What one run started; :meth:`stop_all` ends every process group."""

    work_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.work_dir / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - crsmon's own commands
                argv,
                cwd=self.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@contextmanager
def services() -> Iterator[Services]:
    """A :class:`Services` in a temporary directory, stopped on the way out
    (also on SIGTERM, which is turned into an interrupt while it is open)."""
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        del frame
        raise KeyboardInterrupt(f"signal {signum}")

    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="crsmon-bench-") as tmp:
        owned = Services(Path(tmp))
        try:
            yield owned
        finally:
            owned.stop_all()
            if previous is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, previous)


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards.

    ``admin_url``: a libpq URL of a database the role may CREATE DATABASE from.
    """
    name = f"crsmon_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL is not answering ({type(exc).__name__})"
        ) from None
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_redis(owned: Services) -> str:
    """A private redis-server on a free loopback port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed")
    for _ in range(5):
        port = free_port()
        argv = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(owned.work_dir), "--daemonize", "no",
        ]  # fmt: skip
        proc = owned.start("redis", argv, dict(os.environ))
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + 10
        while proc.alive() and time.monotonic() < deadline:
            try:
                if client.ping():
                    return f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.stop()
    raise BenchError("could not start a private redis-server")


def crsmon_argv(*args: str) -> list[str]:
    """The ``crsmon`` command line in this interpreter."""
    return [sys.executable, "-m", "crsmon", *args]
