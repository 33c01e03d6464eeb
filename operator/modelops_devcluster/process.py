"""The processes of the local control plane: launch, watch and stop them.

etcd, kube-apiserver and kube-controller-manager are long-running servers. This
module decides how they are launched (a session of their own, output to a log
file, killed with their parent unless detached) and how they are stopped
(SIGTERM, then SIGKILL after a timeout), so that neither a test run nor
`modelops cluster down` leaves a stray process behind. A process may also be
known only by its pid (read back from the `cluster up` state file); it is then
only signalled after checking that the pid still runs the same executable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn that makes the child receive SIGKILL when this process dies,
    so a crashed or killed test run cannot orphan an API server (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return lambda: None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass
class ManagedProcess:
    """One control-plane process: a child we spawned, or a pid from a state file."""

    name: str
    pid: int
    executable: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        detached: bool = False,
        env: dict[str, str] | None = None,
    ) -> ManagedProcess:
        """Start `argv` in a new session with stdout+stderr appended to `log_path`.

        Detached processes outlive this one (for `modelops cluster up`); the others
        are killed by the kernel if this process dies without stopping them.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if detached else _die_with_parent(),
                close_fds=True,
                env=env,
            )
        return cls(name=name, pid=popen.pid, executable=argv[0], log_path=log_path, popen=popen)

    def running(self) -> bool:
        """Whether the process is alive (and, for a bare pid, still our executable)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.executable)

    def exit_code(self) -> int | None:
        """The exit status of a child that has exited (None otherwise or for a bare pid)."""
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the process group the process leads (it started a session)."""
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def _pid_runs(pid: int, executable: str) -> bool:
    proc = Path("/proc") / str(pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return state not in ("Z", "X") and argv0 == executable


def _wait_gone(processes: Sequence[ManagedProcess], deadline: float) -> list[ManagedProcess]:
    alive = list(processes)
    while alive:
        alive = [p for p in alive if p.running()]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def stop_all(processes: Sequence[ManagedProcess], timeout: float = 15.0) -> list[ManagedProcess]:
    """Stop `processes` one by one in reverse start order: SIGTERM, then SIGKILL if
    one is still alive after `timeout`. Clients go before the servers they use
    (etcd waits for open watch streams), which makes the whole stop take ~1s.

    Returns the processes that survived SIGKILL (normally none).
    """
    survivors: list[ManagedProcess] = []
    for p in reversed(processes):
        p.signal(signal.SIGTERM)
        if _wait_gone([p], time.monotonic() + timeout):
            p.signal(signal.SIGKILL)
            survivors += _wait_gone([p], time.monotonic() + 5.0)
        if p.popen is not None and p.popen.poll() is not None:
            p.popen.wait()  # reaped: no zombie is left
    return survivors
