"""Sandbox alerting: the scaleops alert bridge and a real Alertmanager routed to it."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from scaleops.sandbox.probes import http_ok
from scaleops.sandbox.procs import spawn
from scaleops.sandbox.services import LOCAL, PrefectServer, SandboxError, Service


class AlertBridge(Service):
    name = "alert_bridge"
    requires = ("prefect", "postgres")
    description = "scaleops alerts serve: Alertmanager/Grafana webhooks -> Prefect events"

    @property
    def token(self) -> str:
        return self.sb.secret("alerts_token")

    @property
    def prefect(self) -> PrefectServer:
        return self.sb.service("prefect")  # type: ignore[return-value]

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "scaleops.cli",
            "alerts",
            "serve",
            "--host",
            LOCAL,
            "--port",
            str(self.port),
        ]
        env: dict[str, str | None] = {"SCALEOPS_ALERTS__TOKEN": self.token, **self.settings_env()}
        self.env_fingerprint.write_text(self._fingerprint())
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0], env=env)

    def settings_env(self) -> dict[str, str]:
        """Prefect's API, and the sandbox's PostgreSQL for the durable dedupe and the alert windows."""
        return {
            "PREFECT_API_URL": self.prefect.env()["PREFECT_API_URL"],
            "SCALEOPS_POSTGRES__DSN": self.sb.service("postgres").env()["SCALEOPS_POSTGRES__DSN"],
        }

    @property
    def env_fingerprint(self) -> Path:
        return self.home / "env.sha256"

    def _fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.settings_env(), sort_keys=True).encode()).hexdigest()

    def outdated(self) -> bool:
        """Started without the sandbox's PostgreSQL, or with a Prefect or PostgreSQL that has moved."""
        try:
            return self.env_fingerprint.read_text() != self._fingerprint()
        except OSError:
            return True

    def probe(self) -> bool:
        return http_ok(f"{self.url()}/healthz")

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_ALERTS__URL": self.url(), "SCALEOPS_ALERTS__TOKEN": self.token}


def alertmanager_config(bridge_url: str, token_file: str) -> dict[str, Any]:
    """Route every alert to the bridge, one group per alert, fast enough for tests."""
    return {
        "route": {
            "receiver": "scaleops",
            "group_by": ["..."],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "scaleops",
                "webhook_configs": [
                    {
                        "url": f"{bridge_url}/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file}},
                    }
                ],
            }
        ],
    }


class Alertmanager(Service):
    name = "alertmanager"
    requires = ("alert_bridge",)
    description = "Prometheus Alertmanager (Debian), routed to the alert bridge"

    @property
    def bridge(self) -> AlertBridge:
        return self.sb.service("alert_bridge")  # type: ignore[return-value]

    def start(self) -> None:
        import yaml

        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if not binary:
            raise SandboxError(
                "alertmanager: not installed; install the Debian package prometheus-alertmanager"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        token_file = self.home / "bridge-token"
        token_file.write_text(self.bridge.token)
        token_file.chmod(0o600)
        config = self.home / "alertmanager.yml"
        config.write_text(yaml.safe_dump(alertmanager_config(self.bridge.url(), str(token_file.resolve()))))
        (self.home / "data").mkdir(exist_ok=True)
        args = [
            binary,
            f"--config.file={config.resolve()}",
            f"--storage.path={(self.home / 'data').resolve()}",
            f"--web.listen-address={LOCAL}:{self.port}",
            "--cluster.listen-address=",  # no HA gossip: it would bind every interface
            "--log.level=warn",
        ]
        spawn(args, cwd=self.home, log=self.log, pidfile=self.pidfiles()[0])

    def probe(self) -> bool:
        return http_ok(f"{self.url()}/-/ready")

    def env(self) -> dict[str, str]:
        return {"SCALEOPS_ALERTMANAGER__URL": self.url()}
