"""Sandbox service `prometheus`: the Debian Prometheus with weeks of generated, realistic history.

At first start the history (daily and weekly cycles, growth, noise, a few scrape gaps and spikes, 5-minute
samples) is written as OpenMetrics and loaded with `promtool tsdb create-blocks-from openmetrics`. It
runs from 30 days before the start to 7 days after it: a query that ends "now" sees a fresh series for a
week without anything scraping. A start more than 3 days after the history was made regenerates it.
(promtool 2.42 writes one block per 2 hours: ~450 blocks, 20-60 s on a busy 2-core machine.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaleops.sandbox.probes import http_ok
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, SandboxError, Service

if TYPE_CHECKING:  # numpy is imported where history is made: a healthy `up` never needs it
    import numpy as np

STEP_SECONDS = 300
DAYS_BEFORE = 30
DAYS_AFTER = 7
REGENERATE_AFTER_DAYS = 3
DAY = 86_400

# The series this Prometheus holds, exported as SCALEOPS_CAPACITY__SERIES by `scaleops sandbox env`, so
# `scaleops demo` forecasts with no configuration (production has no default series).
SANDBOX_SERIES = [
    {
        "name": "disk-db-1",
        "source": "prometheus",
        "query": 'avg_over_time(scaleops_disk_used_gb{host="db-1"}[1h])',
        "step": "1h",
        "threshold": 800,
        "unit": "GB",
        "capacity_per_unit": 100,
        "unit_cost_per_month": 8.0,
        "bounds": [0, 1000],
    },
    {
        "name": "cpu-api",
        "source": "prometheus",
        "query": 'avg_over_time(scaleops_cpu_utilization_percent{service="api"}[1h])',
        "step": "1h",
        "threshold": 85,
        "unit": "%",
        "capacity_per_unit": 10,
        "unit_cost_per_month": 70.0,
        "bounds": [0, 100],
    },
    {
        "name": "memory-cache-1",
        "source": "prometheus",
        "query": 'avg_over_time(scaleops_memory_used_gb{instance="cache-1"}[1h])',
        "step": "1h",
        "threshold": 0.9,
        "unit": "GB",
        "bounds": [0, 1],
    },
    {
        "name": "rps-rpc-gateway",
        "source": "prometheus",
        "query": 'avg_over_time(scaleops_http_requests_per_second{service="rpc-gateway"}[1h])',
        "step": "1h",
        "threshold": 2500,
        "unit": "req/s",
        "capacity_per_unit": 500,
        "unit_cost_per_month": 120.0,
        "bounds": [0, None],
    },
]


def _daily_shape(hours: np.ndarray, peak_hour: float = 14.0) -> np.ndarray:
    """0..1, low at night, high in the (UTC) afternoon."""
    import numpy as np

    return 0.5 + 0.5 * np.cos(2 * np.pi * (hours - peak_hour) / 24)


def generate_history(
    start: float, end: float, seed: int = 7
) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """{family: (labels, timestamps, values)}: the four series the default settings forecast."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(start, end, STEP_SECONDS, dtype=float)
    days = (t - start) / DAY
    hours = (t % DAY) / 3600
    weekday = ((t // DAY + 3) % 7).astype(int)  # 1970-01-01 was a Thursday: 0 = Monday
    weekend = weekday >= 5
    daily = _daily_shape(hours)

    disk = 632 + 4.0 * days + 3 * daily + rng.normal(0, 0.8, t.size)
    cpu = 30 + 28 * daily * np.where(weekend, 0.6, 1.0) + 0.12 * days + rng.normal(0, 3, t.size)
    memory = 0.55 + 0.04 * np.sin(2 * np.pi * days / 7) + 0.03 * daily + rng.normal(0, 0.01, t.size)
    rps = 800 * (1 + 0.6 * daily) * np.where(weekend, 0.7, 1.0) * (1 + 0.01 * days)
    rps *= 1 + rng.normal(0, 0.05, t.size)

    for series in (cpu, rps):  # a few short spikes
        for at in rng.choice(t.size - 12, size=5, replace=False):
            series[at : at + 6] *= 1.6
    series_map = {
        "scaleops_disk_used_gb": ('host="db-1"', np.clip(disk, 0, 1000)),
        "scaleops_cpu_utilization_percent": ('service="api"', np.clip(cpu, 0, 100)),
        "scaleops_memory_used_gb": ('instance="cache-1"', np.clip(memory, 0, 1)),
        "scaleops_http_requests_per_second": ('service="rpc-gateway"', np.clip(rps, 0, None)),
    }
    out = {}
    for i, (family, (labels, values)) in enumerate(series_map.items()):
        keep = np.ones(t.size, dtype=bool)
        gap_start = int((DAYS_BEFORE - 10 + 2 * i) * DAY / STEP_SECONDS)  # a 2-3 hour scrape gap each
        keep[gap_start : gap_start + 24 + 6 * i] = False
        out[family] = (labels, t[keep], values[keep])
    return out


def openmetrics(history: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> str:
    lines = []
    for family, (labels, stamps, values) in history.items():
        lines.append(f"# TYPE {family} gauge")
        lines.extend(f"{family}{{{labels}}} {v:.6g} {int(ts)}" for ts, v in zip(stamps, values, strict=True))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class Prometheus(Service):
    name = "prometheus"
    description = "Prometheus (Debian) with generated history loaded by promtool"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def marker(self) -> Path:
        return self.home / "history.json"

    def history(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.marker.read_text()))
        except (OSError, ValueError):
            return {}

    def load_history(self) -> None:
        now = time.time()
        start = (now // STEP_SECONDS) * STEP_SECONDS - DAYS_BEFORE * DAY
        end = start + (DAYS_BEFORE + DAYS_AFTER) * DAY
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        source = self.home / "history.om"
        source.write_text(openmetrics(generate_history(start, end)))
        promtool = shutil.which("promtool") or "promtool"
        result = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        source.unlink(missing_ok=True)
        if result.returncode != 0:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self.log.write_text(result.stdout + result.stderr)
            raise SandboxError(f"prometheus: promtool create-blocks-from failed; see {self.log}")
        self.marker.write_text(json.dumps({"start": start, "end": end, "made_at": now}))

    def start(self) -> None:
        binary = shutil.which("prometheus")
        if not binary:
            raise SandboxError("prometheus: binary not found; install the Debian package prometheus")
        self.home.mkdir(parents=True, exist_ok=True)
        if self.history().get("made_at", 0) < time.time() - REGENERATE_AFTER_DAYS * DAY:
            self.load_history()
        config = self.home / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
        args = [
            binary,
            f"--config.file={config.resolve()}",
            f"--storage.tsdb.path={self.data.resolve()}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address={LOCAL}:{self.port}",
            "--log.level=warn",
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        return http_ok(f"{self.url()}/-/ready")

    def env(self) -> dict[str, str]:
        return {
            "SCALEOPS_CAPACITY__PROMETHEUS_URL": self.url(),
            "SCALEOPS_CAPACITY__SERIES": json.dumps(SANDBOX_SERIES),
        }

    def details(self) -> dict[str, Any]:
        history = self.history()
        return {"history_start": history.get("start"), "history_end": history.get("end")}
