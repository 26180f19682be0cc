"""Process plumbing for the sandbox: free ports, detached processes, PID files that can go stale."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, bus_offset: int | None = None, avoid: set[int] | None = None) -> int:
    """A free 127.0.0.1 port; with `bus_offset`, port+offset must be free too (Redis Cluster bus)."""
    avoid = avoid or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in avoid:
            continue
        if bus_offset is not None and (port + bus_offset > 65535 or not port_is_free(port + bus_offset)):
            continue
        return port
    raise RuntimeError("could not find a free port on 127.0.0.1")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def pid_cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def read_pid(path: Path) -> int | None:
    """First line of a PID file (ours, or PostgreSQL's postmaster.pid), or None."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first) if first else None
    except (OSError, ValueError):
        return None


def owned_pid(pidfile: Path, home: Path) -> int | None:
    """The PID in `pidfile` if that process is alive and runs inside `home` (so not a reused PID)."""
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid):
        return None
    cwd = pid_cwd(pid)
    if cwd is None:
        return None
    home = home.resolve()
    if cwd.resolve() != home and home not in cwd.resolve().parents:
        return None
    return pid


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    pidfile: Path | None,
    env: dict[str, str | None] | None = None,
    user: str | None = None,
) -> int:
    """Start a detached process (own session) with output appended to `log`; write its PID file.

    `env` adds to the current environment; a value of None removes that variable.
    """
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            close_fds=True,
        )
    if pidfile is not None:
        pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 20.0, group: bool = True) -> None:
    """Signal a process (and its process group when it leads one), then SIGKILL after `timeout`."""

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)

    send(sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
