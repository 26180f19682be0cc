"""Bad input to any command (issue 18.8): exit 2 with one line on stderr naming the input, never a
traceback, never the value of a secret. One table holds every case; those that need no service run here,
and `tests/integration/cli/test_bad_input.py` runs the ones that need the sandbox's Prefect server.
A service that is down is an unused port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CSV = ROOT / "tests" / "fixtures" / "nyc_taxi_16days.csv"
TMP = Path(tempfile.gettempdir())


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DOWN = unused_port()  # nothing listens here: a database or a Prefect API that is down
EVM_CHAIN = {
    "SCALEOPS_CHAINS__T__RPC_URL": f"http://127.0.0.1:{DOWN}",
    "SCALEOPS_CHAINS__T__CHAIN_ID": "1",
}
DB_DOWN = {
    "SCALEOPS_POSTGRES__DSN": f"postgresql://postgres:Sekr3t-pw@127.0.0.1:{DOWN}/postgres",
    **EVM_CHAIN,
}
PREFECT_DOWN = {"PREFECT_API_URL": f"http://127.0.0.1:{DOWN}/api"}
DAYS = ["--from", "2026-11-01", "--to", "2026-11-02"]


@dataclass
class Case:
    name: str
    args: list[str]
    names: str  # what stderr must name: the option, setting or field
    env: dict[str, str] = field(default_factory=dict)
    stdin: str = ""
    service: str | None = None  # "prefect": needs the sandbox's Prefect server with the deployments
    absent: tuple[str, ...] = ()  # values that must not be echoed (secrets)


OUTBOX_ADD = ["outbox", "add", "--chain", "t"]
CASES = [
    Case(
        "outbox add: NaN in --payload",
        [*OUTBOX_ADD, "--kind", "anchor", "--key", "k1", "--payload", '{"a": NaN}'],
        "payload",
        DB_DOWN,
    ),
    Case(
        "outbox add: Infinity in a line of --from-file",
        [*OUTBOX_ADD, "--from-file", "-"],
        "line 1: payload",
        DB_DOWN,
        stdin='{"key": "k1", "kind": "anchor", "payload": {"a": Infinity}}\n',
    ),
    Case(
        "outbox add: one key on two lines",
        [*OUTBOX_ADD, "--from-file", "-"],
        "line 2: key 'k1' repeats line 1",
        DB_DOWN,
        stdin='{"key": "k1", "kind": "anchor", "payload": 1}\n'
        '{"key": "k1", "kind": "anchor", "payload": 2}\n',
    ),
    Case(
        "outbox add: the database down",
        [*OUTBOX_ADD, "--kind", "anchor", "--key", "k1", "--payload", "{}"],
        "SCALEOPS_POSTGRES__DSN",
        DB_DOWN,
        absent=("Sekr3t-pw",),
    ),
    Case("outbox status: the database down", ["outbox", "status"], "SCALEOPS_POSTGRES__DSN", DB_DOWN),
    Case("db migrate: the database down", ["db", "migrate"], "SCALEOPS_POSTGRES__DSN", DB_DOWN),
    Case(
        "a list setting that is not JSON",
        ["config", "check"],
        "SCALEOPS_BACKUP__DATABASES",
        {"SCALEOPS_BACKUP__DATABASES": "notjson"},
    ),
    Case(
        "a table setting that is not JSON, read by another command",
        ["outbox", "status"],
        "SCALEOPS_CACHE__WARM_SETS",
        {"SCALEOPS_CACHE__WARM_SETS": "{notjson"},
    ),
    Case(
        "forecast --output a directory",
        ["forecast", "-i", str(CSV), "--horizon", "48", "-o", str(TMP)],
        "--output",
    ),
    Case(
        "forecast --horizon of 99,999,999,999 steps",
        ["forecast", "-i", str(CSV), "--horizon", "99999999999", "-o", str(TMP / "never-written.csv")],
        "--horizon",
    ),
    Case(
        "backfill: Prefect down", ["backfill", "preflight", *DAYS, "--yes"], "PREFECT_API_URL", PREFECT_DOWN
    ),
    Case("backfill status: Prefect down", ["backfill", "status", "x"], "PREFECT_API_URL", PREFECT_DOWN),
    Case(
        "config check: a signer key of 2 bytes",
        ["config", "check"],
        "SCALEOPS_CHAINS__T__SIGNER_KEY",
        {**EVM_CHAIN, "SCALEOPS_CHAINS__T__SIGNER_KEY": "0x1234"},
        absent=("0x1234",),
    ),
    Case(
        "config check: a contract that is not hex",
        ["config", "check"],
        "SCALEOPS_CHAINS__T__CONTRACT",
        {**EVM_CHAIN, "SCALEOPS_CHAINS__T__CONTRACT": "nothex"},
    ),
    Case(
        "config check: a signer address that is not one",
        ["config", "check"],
        "SCALEOPS_CHAINS__T__SIGNER_ADDRESS",
        {**EVM_CHAIN, "SCALEOPS_CHAINS__T__SIGNER_ADDRESS": "0x12"},
    ),
    Case(
        "config check: PREFECT_API_URL not a URL",
        ["config", "check"],
        "PREFECT_API_URL",
        {"PREFECT_API_URL": "notaurl"},
    ),
    Case(
        "backfill -p with a name the deployment does not take",
        ["backfill", "preflight", *DAYS, "-p", "foo=1", "--yes"],
        "--param foo",
        service="prefect",
    ),
    Case(
        "backfill -p with a value the deployment's schema refuses",
        ["backfill", "cache-warming", *DAYS, "-p", "memory_budget=lots", "--yes"],
        "--param memory_budget",
        service="prefect",
    ),
]


def run_case(case: Case, base_env: dict[str, str]) -> None:
    """Run the command; assert exit 2, one line on stderr naming the input, no traceback."""
    env = {**base_env, "COLUMNS": "200", **case.env}
    result = subprocess.run(
        [sys.executable, "-m", "scaleops.cli", *case.args],
        input=case.stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 2, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert case.names in lines[0], lines[0]
    for value in case.absent:
        assert value not in output


def clean_env() -> dict[str, str]:
    """No SCALEOPS_ or PREFECT_ setting of the caller's (a developer's shell may hold the sandbox's)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SCALEOPS_", "PREFECT_"))}
    return {**keep, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.mark.parametrize("case", [c for c in CASES if c.service is None], ids=lambda c: c.name)
def test_bad_input_exits_2_naming_it(case: Case) -> None:
    run_case(case, clean_env())
