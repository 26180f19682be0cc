"""`scaleops sandbox up|down|status|env`: real services on loopback, managed idempotently.

State lives in `<sandbox dir>/state.json` (ports and generated passwords, mode 0600); every service has
its own folder, PID file(s) and log under `<sandbox dir>/logs/`. A service already running and healthy
is never restarted; a PID file whose process is gone (or is somebody else's) is treated as stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from scaleops.core.settings import Settings
from scaleops.sandbox.procs import free_port, port_is_free, tail
from scaleops.sandbox.registry import SERVICES
from scaleops.sandbox.services import SandboxError, Service

Progress = Callable[[str], None]
T = TypeVar("T")
PROBE_THREADS = 8  # probes wait on sockets, not on the CPU: check a wave of services at once


class Sandbox:
    def __init__(self, settings: Settings, directory: Path | None = None):
        self.settings = settings
        self.dir = Path(directory or settings.sandbox.dir).absolute()
        self._services = {cls.name: cls(self) for cls in SERVICES}
        self._state: dict[str, Any] | None = None
        self._guard = threading.RLock()  # probes run in threads and may record a port, secret or memo
        self._locked = False  # this process holds the `up`/`down` lock

    # -- state ----------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def state(self) -> dict[str, Any]:
        with self._guard:
            if self._state is None:
                try:
                    self._state = json.loads(self.state_file.read_text())
                except (OSError, ValueError):
                    self._state = {}
                self._state.setdefault("ports", {})
                self._state.setdefault("secrets", {})
            return self._state

    def save(self) -> None:
        with self._guard:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
            tmp.chmod(0o600)
            tmp.replace(self.state_file)

    def port(self, key: str, *, bus_offset: int | None = None) -> int:
        """The port recorded for `key`; a new free one the first time."""
        with self._guard:
            ports: dict[str, int] = self.state["ports"]
            if key not in ports:
                ports[key] = free_port(bus_offset=bus_offset, avoid=set(ports.values()))
                self.save()
            return int(ports[key])

    def secret(self, key: str) -> str:
        with self._guard:
            values: dict[str, str] = self.state["secrets"]
            if key not in values:
                values[key] = secrets.token_urlsafe(18)
                self.save()
            return values[key]

    def memo(self, key: str, source: str, compute: Callable[[str], str]) -> str:
        """`compute(source)`, kept in the state beside a digest of `source` (recomputed when that changes).

        For values derived from a secret or an artifact (signer keys and addresses, a bytecode hash): they
        never change while their source does not, and computing them imports eth_account or solders,
        seconds per process. Written to disk only under the `up`/`down` lock (so `sandbox env` run
        beside an `up` cannot overwrite what that `up` records); elsewhere remembered in memory.
        """
        digest = hashlib.sha256(source.encode()).hexdigest()
        with self._guard:
            memos: dict[str, Any] = self.state.setdefault("memo", {})
            entry = memos.get(key)
            if isinstance(entry, dict) and entry.get("of") == digest:
                return str(entry["value"])
            value = compute(source)
            memos[key] = {"of": digest, "value": value}
            if self._locked:
                self.save()
            return value

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One `up`/`down` at a time per sandbox directory (parallel test workers, two terminals)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                with self._guard:
                    self._state = None  # another process may have changed it
                    self._locked = True
                yield
            finally:
                self._locked = False
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- services -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._services)

    def service(self, name: str) -> Service:
        try:
            return self._services[name]
        except KeyError:
            raise SandboxError(f"unknown sandbox service {name!r}; known: {', '.join(self.names)}") from None

    def select(self, only: Iterable[str] | None) -> list[Service]:
        """The chosen services plus everything they require, in start order."""
        wanted = set(only or self.names)
        for name in list(wanted):
            self.service(name)  # validates the name
        changed = True
        while changed:
            changed = False
            for name in list(wanted):
                for dep in self._services[name].requires:
                    if dep not in wanted:
                        wanted.add(dep)
                        changed = True
        return [s for s in self._services.values() if s.name in wanted]

    def configured(self, svc: Service) -> bool:
        """Whether the service has its ports recorded (was started at least once)."""
        ports = self.state["ports"]
        if not svc.port_keys():
            return all(self.configured(self._services[dep]) for dep in svc.requires)
        return all(key in ports for key in svc.port_keys())

    def _reassign_busy_ports(self, service: Service) -> None:
        """A recorded port that something else took since: give the service a new one."""
        ports: dict[str, int] = self.state["ports"]
        for key in service.port_keys():
            if key in ports and not port_is_free(ports[key]):
                del ports[key]
        self.save()

    def up(self, only: Iterable[str] | None = None, progress: Progress | None = None) -> dict[str, Any]:
        """Start what is not running, wait until each is healthy, fail naming the service and its log."""
        say = progress or (lambda _msg: None)
        timeout = self.settings.sandbox.start_timeout_seconds
        with self.lock():
            selected = self.select(only)
            done: set[str] = set()
            waiting: dict[str, float] = {}  # name -> deadline
            pending = list(selected)
            while pending or waiting:
                for svc in list(pending):
                    needs = [s.name for s in selected if s is not svc] if svc.after_all else svc.requires
                    if not all(dep in done for dep in needs):
                        continue
                    pending.remove(svc)
                    prepared = False
                    if svc.running() and svc.outdated():
                        say(f"{svc.name}: configuration changed, restarting")
                        self._prepare(svc)  # while the old instance still serves: a short restart
                        prepared = True
                        svc.stop()
                    if svc.running():
                        say(f"{svc.name}: already running")
                    else:
                        if svc.pids():  # some of its processes died: start it whole, on its own ports
                            say(f"{svc.name}: partly running, restarting")
                            svc.stop()
                        svc.clear_stale()
                        self._reassign_busy_ports(svc)
                        if not prepared:
                            self._prepare(svc)
                        say(f"{svc.name}: starting")
                        try:
                            svc.start()
                        except SandboxError:
                            raise
                        except Exception as exc:
                            raise SandboxError(f"{svc.name}: failed to start ({exc}); see {svc.log}") from exc
                    waiting[svc.name] = time.monotonic() + timeout
                answers = self._answer_all([self._services[name] for name in waiting])
                for name, deadline in list(waiting.items()):
                    svc = self._services[name]
                    if answers[name]:
                        try:
                            svc.ready()
                        except SandboxError:
                            raise
                        except Exception as exc:
                            raise SandboxError(f"{name}: set-up failed ({exc}); see {svc.log}") from exc
                        del waiting[name]
                        done.add(name)
                        say(f"{name}: healthy at {svc.url()}")
                    elif not svc.running():
                        raise SandboxError(
                            f"{name}: process exited before it became healthy; see {svc.log}\n{tail(svc.log)}"
                        )
                    elif time.monotonic() > deadline:
                        raise SandboxError(
                            f"{name}: not healthy after {timeout:.0f}s; see {svc.log}\n{tail(svc.log)}"
                        )
                if waiting:
                    time.sleep(0.2)
        return self.status(only)

    @staticmethod
    def _prepare(svc: Service) -> None:
        try:
            svc.prepare()
        except SandboxError:
            raise
        except Exception as exc:
            raise SandboxError(f"{svc.name}: preparing to start failed ({exc}); see {svc.log}") from exc

    @staticmethod
    def _answers(svc: Service) -> bool:
        try:
            return svc.probe()
        except Exception:
            return False

    @staticmethod
    def _each(services: list[Service], check: Callable[[Service], T]) -> dict[str, T]:
        """{name: check(service)}, the services checked at the same time (each check waits on a socket)."""
        if len(services) <= 1:
            return {svc.name: check(svc) for svc in services}
        with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, len(services))) as pool:
            return dict(zip((svc.name for svc in services), pool.map(check, services), strict=True))

    def _answer_all(self, services: list[Service]) -> dict[str, bool]:
        return self._each(services, self._answers)

    def down(self, purge: bool = False, progress: Progress | None = None) -> None:
        """Stop the sandbox's own processes (by PID, dependents first); `purge` deletes all state."""
        say = progress or (lambda _msg: None)
        with self.lock():
            for svc in reversed(list(self._services.values())):
                if svc.pids():
                    say(f"{svc.name}: stopping")
                    svc.stop()
            if purge:
                self._purge()
                say(f"removed {self.dir}")

    def _purge(self) -> None:
        for svc in self._services.values():
            if svc.home.is_symlink():  # data kept outside the checkout (see Postgres._prepare_home)
                outside = svc.home.resolve()
                shutil.rmtree(outside, ignore_errors=True)
                with contextlib.suppress(OSError):
                    outside.parent.rmdir()  # the per-sandbox folder, once empty
        for child in self.dir.iterdir():
            if child.name == ".lock":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        self._state = None

    def status(self, only: Iterable[str] | None = None) -> dict[str, Any]:
        """{service: {url, healthy, running, pids, log, ...}} for the selected (default: all) services."""
        out: dict[str, Any] = {}
        selected = self.select(only)
        configured_names = {svc.name for svc in selected if self.configured(svc)}
        healthy = self._each(selected, lambda svc: svc.name in configured_names and svc.healthy())
        for svc in selected:
            configured = svc.name in configured_names
            entry: dict[str, Any] = {
                "description": svc.description,
                "url": svc.url() if configured else None,
                "healthy": healthy[svc.name],
                "running": svc.running(),
                "pids": svc.pids(),
                "log": str(svc.log),
            }
            entry.update(svc.details() if configured else {})
            out[svc.name] = entry
        return out

    def env(self) -> dict[str, str]:
        """Every setting that points scaleops at this sandbox (only for services that have ports)."""
        if not self.state["ports"]:
            raise SandboxError(f"the sandbox in {self.dir} has never been started: run `scaleops sandbox up`")
        values: dict[str, str] = {}
        for svc in self._services.values():
            if self.configured(svc):
                values.update(svc.env())
        values["SCALEOPS_SANDBOX__DIR"] = str(self.dir)
        return values


def apply_env(values: dict[str, str]) -> None:
    """Put sandbox settings into this process's environment (tests, the demo)."""
    os.environ.update(values)
