"""The Prefect UI of the sandbox lists every scaleops deployment, rendered by headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine reaches no outside host
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,900",
    "--virtual-time-budget=15000",  # let the single-page app fetch and render
]


def chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("chromium")
    assert binary, "make setup installs the Debian package chromium"
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=180
        )


def test_deployments_page_lists_every_deployment(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    api = sandbox_env["PREFECT_API_URL"]
    deploy = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    page = api.removesuffix("/api") + "/deployments"

    dom = chromium("--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    names = [d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]]
    html = dom.stdout.decode(errors="replace")
    missing = [name for name in names if name not in html]
    assert not missing, f"the UI does not list {missing}"

    shot = tmp_path / "deployments.png"
    assert chromium(f"--screenshot={shot}", page).returncode == 0
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert (width, height) == (1440, 900)
