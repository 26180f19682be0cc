"""Every duty's artifacts fit the Prefect UI: rendered from a representative report, no table (markdown
or table artifact) is wider than 8 columns, numbers carry their units in the headers, targets stand next
to the measured values, and metrics are explained (issue 12, section 4)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from scaleops.core.duties import all_duties
from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings

MAX_COLUMNS = 8
AS_OF = datetime(2026, 11, 30, 12, tzinfo=UTC)
EVM_TX = "0x" + "ab" * 32
SOLANA_TX = "5" * 87


def settings(**chains: dict[str, object]) -> Settings:
    base: dict[str, dict[str, object]] = {
        "optimism": {"rpc_url": "http://127.0.0.1:8545", "chain_id": 10},
        "solana": {"rpc_url": "http://127.0.0.1:8899", "chain_id": 1, "kind": "solana"},
    }
    for name, extra in chains.items():
        base[name] = {**base[name], **extra}
    return Settings(chains=base)  # type: ignore[arg-type]


def preflight_report() -> DutyReport:
    from tasks.common.health import Check
    from tasks.preflight.report import PreflightReport

    report = PreflightReport(as_of=AS_OF)
    report.checks = [
        Check(system="postgres_primary", target="127.0.0.1:5432", ok=True, detail="15.4", seconds=0.01),
        Check(system="chain_optimism", target="http://127.0.0.1:1", ok=False, detail="refused", seconds=0.2),
    ]
    report.problem("chain_optimism (http://127.0.0.1:1): refused")
    return report


def backup_report() -> DutyReport:
    from tasks.backup.dump import BackupRecord
    from tasks.backup.lag import ReplicaLag
    from tasks.backup.report import BackupReport
    from tasks.backup.restore import RestoreResult

    report = BackupReport(as_of=AS_OF, databases=["app"], rpo_seconds=3600.0, rto_seconds=12.5)
    report.backups = [
        BackupRecord(
            database="app",
            key="backups/app/app-1.dump",
            bytes=3 * 1024**3,
            sha256="f" * 64,
            started_at=AS_OF,
            finished_at=AS_OF + timedelta(seconds=42),
        )
    ]
    report.replication.lag_seconds = 12.0
    report.replication.missing = ["backups/app/app-0.dump"]
    report.restore = [
        RestoreResult(database="app", backup_key="backups/app/app-1.dump", scratch_database="s", seconds=3.0)
    ]
    report.replica_lag = [ReplicaLag(application_name="replica1", state="streaming", bytes=1024, seconds=0.5)]
    report.problem("1 object(s) missing from the replica")
    return report


def cache_report() -> DutyReport:
    from tasks.cache.report import CacheWarmingReport

    return CacheWarmingReport(
        as_of=AS_OF, warm_set="users", keys_written=1000, bytes_written=200_000, memory_budget_bytes=10**8
    )


def l2_report() -> DutyReport:
    from tasks.l2.poster import ChainReport
    from tasks.l2.report import L2PostingReport

    report = L2PostingReport(as_of=AS_OF)
    report.record_chain(
        "optimism",
        ChainReport(
            chain="optimism",
            kind="evm",
            ops_posted=200,
            batches=2,
            txs=2,
            gas_used=500_000,
            l2_fee_wei=1_500_000_000_000_000,
            l1_fee_wei=20_000_000_000_000,
            fee_per_op=7_600_000_000_000,
            bumped=1,
            batch_hashes=[EVM_TX],
        ),
    )
    report.record_chain(
        "solana",
        ChainReport(
            chain="solana",
            kind="solana",
            ops_posted=30,
            batches=1,
            txs=1,
            lamports=5_000,
            fee_per_op=166,
            max_tx_bytes=1100,
            batch_hashes=[SOLANA_TX],
        ),
    )
    return report


def capacity_report() -> DutyReport:
    from tasks.capacity.report import CapacityReport, SeriesResult

    ok = SeriesResult(
        name="disk",
        source="prometheus",
        unit="GiB",
        threshold=900,
        last_value=400,
        model="AutoETS",
        cv_mase=0.8,
        recommendation="no change needed within the horizon",
        recommended_units=0,
        monthly_cost=0.0,
    )
    upper_only = SeriesResult(  # only the upper 95% band crosses: the mean forecast does not
        name="cpu",
        source="prometheus",
        unit="%",
        threshold=90,
        last_value=70,
        model="AutoARIMA",
        cv_mase=1.3,
        breach_at_upper=AS_OF + timedelta(days=3),
        recommendation="add 2 x 4 vCPU (= 8 vCPU), about 120.00 USD/month more",
        recommended_units=2,
        monthly_cost=120.0,
    )
    report = CapacityReport(as_of=AS_OF, lookback="30d", horizon="14d")
    report.record([ok, upper_only], {})
    upper_only.status = "breach-within-lead-time"
    return report


def cost_report() -> DutyReport:
    from tasks.cost.lifecycle import Finding, PolicyStats
    from tasks.cost.report import CostReport

    report = CostReport(as_of=AS_OF, dry_run=True, max_actions=10)
    report.policies = [PolicyStats(name="old-snapshots", resource="ebs-snapshot", action="delete", found=2)]
    report.findings = [
        Finding(
            policy="old-snapshots",
            id="snap-1",
            where="us-east-1",
            what="8 GiB snapshot",
            age_days=120,
            monthly_usd=0.4,
            state="marked",
            due="2026-12-07",
            detail="unused for 120 days",
        )
    ]
    report.close()
    return report


def archive_report() -> DutyReport:
    from tasks.archive.report import ArchiveReport, BundleRecord, Finding

    report = ArchiveReport(as_of=AS_OF)
    report.pay(BundleRecord(tx_id="tx1", items=10, bytes=2 * 1024**2, winston=5 * 10**9, mode="bundle"))
    report.pending = [Finding(key="k1", sha256="a" * 64, reason="1 of 10 confirmations")]
    return report


REPORTS: dict[str, Callable[[], DutyReport]] = {
    "preflight": preflight_report,
    "backup-verification": backup_report,
    "cache-warming": cache_report,
    "l2-batch-posting": l2_report,
    "capacity-forecast": capacity_report,
    "cost-cleanup": cost_report,
    "arweave-archival": archive_report,
}


def markdown_tables(text: str) -> list[list[str]]:
    """Each markdown table's header cells."""
    tables, previous = [], ""
    for line in text.splitlines():
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()):
            tables.append([c.strip() for c in previous.strip().strip("|").split("|")])
        previous = line
    return tables


def rendered(name: str, settings_: Settings | None = None) -> tuple[str, list[dict[str, object]]]:
    report = REPORTS[name]()
    report.duty = name
    return report.markdown(settings_ or settings()), list(report.table() or [])


def test_every_duty_has_a_representative_report() -> None:
    assert set(REPORTS) == set(all_duties())


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_no_table_is_wider_than_the_ui_shows(name: str) -> None:
    text, rows = rendered(name)
    tables = markdown_tables(text)
    assert tables, f"{name}: no markdown table rendered"
    for header in tables:
        assert len(header) <= MAX_COLUMNS, f"{name}: {len(header)} columns: {header}"
        assert all(header), f"{name}: a column without a header: {header}"
    for row in rows:
        assert len(row) <= MAX_COLUMNS, f"{name}: table artifact row with {len(row)} columns: {list(row)}"


def test_l2_fees_carry_units_next_to_raw_wei_and_lamports() -> None:
    text, rows = rendered("l2-batch-posting")
    headers = " ".join(h for t in markdown_tables(text) for h in t)
    for unit in ("(gwei)", "(ETH)", "(wei)", "(lamports)", "(SOL)"):
        assert unit in headers, f"no {unit} column in the L2 report"
    assert "cap per batch (ETH)" in headers  # MAX_FEE_PER_BATCH beside what was paid
    assert "| 0.01 |" in text  # the default cap, 10^16 wei
    assert "0.00152" in text  # 1.5e15 + 2e13 wei = 0.00152 ETH
    assert "0.000005" in text  # 5,000 lamports = 0.000005 SOL
    assert all("fee" not in k or "(" in k for row in rows for k in row), rows


def test_l2_tx_hashes_link_to_the_chains_explorer_when_one_is_set() -> None:
    plain, _ = rendered("l2-batch-posting")
    assert EVM_TX in plain and "](" not in plain  # listed, not linked, without an explorer
    linked, _ = rendered(
        "l2-batch-posting",
        settings(
            optimism={"explorer_url": "https://optimistic.etherscan.io/"},
            solana={"explorer_url": "https://explorer.solana.com?cluster=devnet"},
        ),
    )
    assert f"[`{EVM_TX}`](https://optimistic.etherscan.io/tx/{EVM_TX})" in linked
    assert f"[`{SOLANA_TX}`](https://explorer.solana.com/tx/{SOLANA_TX}?cluster=devnet)" in linked


def test_backup_report_puts_targets_next_to_rpo_and_lag() -> None:
    text, _ = rendered("backup-verification")
    rpo_line = next(line for line in text.splitlines() if "**RPO**" in line)
    assert "target 26 h" in rpo_line, rpo_line
    assert "SLA 900 s" in rpo_line, rpo_line
    headers = " ".join(h for t in markdown_tables(text) for h in t)
    assert "(GiB)" in headers or "(MiB)" in headers
    assert "3.00" in text  # 3 GiB shown as such, not only as 3221225472 bytes
    assert "(s)" in headers  # seconds named in the headers


def test_capacity_report_explains_cv_mase_and_recommends_only_where_needed() -> None:
    text, rows = rendered("capacity-forecast")
    assert "around -" not in text and "**-**" not in text
    explained = [line for line in text.splitlines() if "CV MASE" in line and "naive" in line]
    assert explained, "CV MASE is not explained"
    disk = text.split("## disk", 1)[1].split("## ", 1)[0]
    assert "recommendation" not in disk  # a series marked ok gets none
    assert "USD/month" in text
    ok_row = next(r for r in rows if r["series"] == "disk")
    assert not ok_row.get("recommendation")
    headers = " ".join(h for t in markdown_tables(text) for h in t)
    assert "threshold" in headers and "last" in headers


def test_cost_report_names_its_currency() -> None:
    text, rows = rendered("cost-cleanup")
    assert "USD/month" in " ".join(h for t in markdown_tables(text) for h in t)
    assert any("usd" in k.lower() for k in rows[0])


def test_archive_report_shows_ar_next_to_winston() -> None:
    text, _ = rendered("arweave-archival")
    headers = " ".join(h for t in markdown_tables(text) for h in t)
    assert "(winston)" in headers and "(AR)" in headers and "(MiB)" in headers


def test_an_explorer_url_that_is_not_http_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scaleops.core.settings import ConfigError, load_settings

    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__RPC_URL", "http://127.0.0.1:8545")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__CHAIN_ID", "10")
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__EXPLORER_URL", "optimistic.etherscan.io")
    with pytest.raises(ConfigError, match="SCALEOPS_CHAINS__OPTIMISM__EXPLORER_URL"):
        load_settings()
    monkeypatch.setenv("SCALEOPS_CHAINS__OPTIMISM__EXPLORER_URL", "https://optimistic.etherscan.io")
    assert load_settings().chains["optimism"].explorer_url == "https://optimistic.etherscan.io"


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_an_artifact_says_first_what_could_not_be_checked(name: str) -> None:
    from scaleops.core.reporting import with_failed_steps

    report = REPORTS[name]()
    report.duty = name
    report.step_failed("SCALEOPS_REDIS__URL: connection refused at redis://127.0.0.1:1")
    text = with_failed_steps(report.markdown(settings()), report)
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert lines[2] == "## Could not check"
    assert lines[4] == "- SCALEOPS_REDIS__URL: connection refused at redis://127.0.0.1:1"
