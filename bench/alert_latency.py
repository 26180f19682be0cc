"""Alert-to-run latency in the sandbox: an Alertmanager webhook to the alert bridge -> a flow run of the
mapped deployment -> picked up and run by the sandbox's process worker.

    .venv/bin/python -m bench.alert_latency [--alerts 3] [--sandbox-dir .sandbox] [--json]

Needs the sandbox (`scaleops sandbox up`); registers the deployments (`prefect deploy --all`) only if
`preflight` is missing. Each alert is a `ScaleopsTargetDown` webhook with a fresh fingerprint, posted only
after the previous run finished (the deployment's concurrency limit would queue it otherwise): a few
alerts, not a load test. They go to a bridge of the bench's own (`scaleops alerts serve` on a free port,
the sandbox's settings, `SCALEOPS_ALERTS__COALESCE_SECONDS=0`, stopped at the end): the sandbox's bridge
attaches every alert for a duty within 10 minutes of the first to that first run, so only one alert per
window would start a run. Per alert, from the server's own timestamps (same machine, same clock):

- bridge -> run created: event, trigger evaluation, the automation's run-deployment action;
- created -> Pending: the worker's poll (`PREFECT_WORKER_QUERY_SECONDS`, default 10 s; the sandbox's worker
  polls every 2 s) picking it up, plus its look-ahead (`PREFECT_WORKER_PREFETCH_SECONDS`);
- Pending -> Running: starting the flow-run process; Running -> end: the flow itself.

It prints the Prefect server's database (PostgreSQL or SQLite) and the worker's polling settings as read
from the worker process's environment, since those bound the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENT = "preflight"
ALERTNAME = "ScaleopsTargetDown"
PREFECT_DEFAULTS = {"PREFECT_WORKER_QUERY_SECONDS": "10", "PREFECT_WORKER_PREFETCH_SECONDS": "10"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STEPS = (
    "bridge -> created",
    "created -> pending",
    "pending -> running",
    "running -> end",
    "bridge -> running",
)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class Bench:
    def __init__(self, sandbox_dir: Path):
        import httpx

        from scaleops.core.settings import Settings
        from scaleops.sandbox.manager import Sandbox

        self.sandbox = Sandbox(Settings(), sandbox_dir)
        self.env = self.sandbox.env()
        self.api = self.env["PREFECT_API_URL"]
        self.auth = {"Authorization": f"Bearer {self.env['SCALEOPS_ALERTS__TOKEN']}"}
        self.http = httpx.Client(timeout=15)
        self.bridge = ""
        self.bridge_process: subprocess.Popen[bytes] | None = None

    def start_bridge(self, log: Path) -> None:
        """`scaleops alerts serve` with the sandbox's settings and coalescing off, on a free port."""
        from scaleops.sandbox.procs import free_port

        port = free_port()
        env = {**os.environ, **self.env, "SCALEOPS_ALERTS__COALESCE_SECONDS": "0"}
        with open(log, "ab") as out:
            self.bridge_process = subprocess.Popen(
                [sys.executable, "-m", "scaleops.cli", "alerts", "serve", "--host", "127.0.0.1"]
                + ["--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.bridge = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.bridge_process.poll() is not None:
                raise SystemExit(f"the bench's alert bridge exited; see {log}")
            with contextlib.suppress(Exception):  # not listening yet
                if self.http.get(f"{self.bridge}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise SystemExit(f"the bench's alert bridge did not answer in 60 s; see {log}")

    def stop_bridge(self) -> None:
        if self.bridge_process is not None and self.bridge_process.poll() is None:
            self.bridge_process.terminate()
            try:
                self.bridge_process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.bridge_process.kill()

    def setup(self) -> dict[str, Any]:
        """The deployment's id, the server's database and the worker's polling settings."""
        status = self.sandbox.status(["worker"])
        unhealthy = [name for name, entry in status.items() if not entry["healthy"]]
        if unhealthy:
            names = ", ".join(unhealthy)
            raise SystemExit(f"sandbox services not healthy: {names}; run `scaleops sandbox up`")
        dep = self.deployment()
        if dep is None:
            print(f"no {DEPLOYMENT} deployment on {self.api}: prefect deploy --all", file=sys.stderr)
            subprocess.run(
                [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
                cwd=ROOT,
                env={**os.environ, "PREFECT_API_URL": self.api},
                check=True,
                capture_output=True,
                timeout=600,
            )
            dep = self.deployment()
        assert dep is not None
        return {
            "deployment_id": dep["id"],
            "database": self.server_database(status["prefect"]["pids"]),
            "worker": self.worker_settings(status["worker"]["pids"]),
        }

    def deployment(self) -> dict[str, Any] | None:
        body = {"deployments": {"name": {"any_": [DEPLOYMENT]}}}
        found = self.http.post(f"{self.api}/deployments/filter", json=body).json()
        return found[0] if found else None

    @staticmethod
    def environment(pids: list[int]) -> dict[str, str]:
        """The environment the service's processes were started with."""
        values: dict[str, str] = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    key, _, value = entry.decode(errors="replace").partition("=")
                    values[key] = value
        return values

    def worker_settings(self, pids: list[int]) -> dict[str, str]:
        found = self.environment(pids)
        return {key: found.get(key, default) for key, default in PREFECT_DEFAULTS.items()}

    def server_database(self, pids: list[int]) -> str:
        """The running server's database URL, password masked (no URL: Prefect's SQLite default)."""
        url = self.environment(pids).get("PREFECT_API_DATABASE_CONNECTION_URL")
        if not url:
            return "sqlite (Prefect's default, PREFECT_HOME/prefect.db)"
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1****@", url)

    def alert(self) -> tuple[float, str]:
        """Post one firing alert to the bridge; (the time it was posted, its fingerprint)."""
        starts = datetime.now(UTC).replace(microsecond=0).isoformat()
        fingerprint = uuid.uuid4().hex[:16]
        webhook = {
            "version": "4",
            "status": "firing",
            "receiver": "scaleops",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": ALERTNAME, "instance": f"bench-{uuid.uuid4().hex[:8]}"},
                    "startsAt": starts,
                    "fingerprint": fingerprint,
                }
            ],
        }
        posted = time.time()
        answer = self.http.post(f"{self.bridge}/alertmanager", json=webhook, headers=self.auth)
        if answer.status_code != 202:
            raise SystemExit(f"the bridge answered {answer.status_code}: {answer.text[:200]}")
        return posted, fingerprint

    def run_for(self, dep_id: str, fingerprint: str) -> dict[str, Any] | None:
        body = {"deployments": {"id": {"any_": [dep_id]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 50}
        for run in self.http.post(f"{self.api}/flow_runs/filter", json=body).json():
            alert = (run.get("parameters") or {}).get("alert") or {}
            if alert.get("fingerprint") == fingerprint:
                return dict(run)
        return None

    def states(self, run_id: str) -> dict[str, float]:
        """The first time the run entered each state type."""
        found = self.http.get(f"{self.api}/flow_run_states/", params={"flow_run_id": run_id}).json()
        first: dict[str, float] = {}
        for state in sorted(found, key=lambda s: s["timestamp"]):
            first.setdefault(state["type"], _ts(state["timestamp"]) or 0.0)
        return first

    def measure(self, dep_id: str, timeout: float) -> dict[str, Any]:
        posted, fingerprint = self.alert()
        deadline = time.monotonic() + timeout
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            run = self.run_for(dep_id, fingerprint)
            if run and run["state_type"] in TERMINAL:
                break
            time.sleep(0.25)
        if not run:
            raise SystemExit(f"no {DEPLOYMENT} run for the alert after {timeout:.0f} s")
        states = self.states(run["id"])
        created = _ts(run["created"]) or posted
        pending, running, end = states.get("PENDING"), states.get("RUNNING"), _ts(run.get("end_time"))

        def gap(a: float | None, b: float | None) -> float | None:
            return round(b - a, 2) if a is not None and b is not None else None

        return {
            "run": run["id"],
            "state": run["state_name"],
            "bridge -> created": gap(posted, created),
            "created -> pending": gap(created, pending),
            "pending -> running": gap(pending, running),
            "running -> end": gap(running, end),
            "bridge -> running": gap(posted, running),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alert_latency", description="alert-to-run latency")
    parser.add_argument("--alerts", type=int, default=3, help="alerts to send, one after the other")
    parser.add_argument("--sandbox-dir", type=Path, default=ROOT / ".sandbox")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for each run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    bench = Bench(args.sandbox_dir)
    setup = bench.setup()
    bench.start_bridge(args.sandbox_dir / "logs" / "bench_alert_bridge.log")
    try:
        rows = [bench.measure(setup["deployment_id"], args.timeout) for _ in range(args.alerts)]
    finally:
        bench.stop_bridge()
    summary = {
        step: {
            "median": statistics.median(values),
            "max": max(values),
        }
        for step in STEPS
        if (values := [row[step] for row in rows if row[step] is not None])
    }
    result = {"database": setup["database"], "worker": setup["worker"], "alerts": rows, "summary": summary}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    worker = ", ".join(f"{key}={value}" for key, value in setup["worker"].items())
    print(f"Prefect database: {setup['database']}\nworker: {worker}")
    print("| alert | state | " + " | ".join(STEPS) + " |")
    print("|---|---|" + "---:|" * len(STEPS))
    for i, row in enumerate(rows, 1):
        cells = " | ".join("-" if row[step] is None else f"{row[step]:.1f} s" for step in STEPS)
        print(f"| {i} | {row['state']} | {cells} |")
    cells = " | ".join(
        f"{summary[step]['median']:.1f} s ({summary[step]['max']:.1f})" if step in summary else "-"
        for step in STEPS
    )
    print(f"| median (max) | | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
