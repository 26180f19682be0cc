"""The l2-batch-posting report: its model, its outcome and its markdown artifact."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field

from scaleops.core.redaction import REDACTOR
from scaleops.core.reporting import DutyReport
from scaleops.core.settings import Settings
from tasks.l2.evm_poster import ChainReport


class L2PostingReport(DutyReport):
    chains: dict[str, ChainReport] = Field(default_factory=dict)

    def outcome(self) -> str:
        if any(c.fee_capped for c in self.chains.values()):
            return "fee-cap"
        return "posted" if self.ok else "failed"

    def resource_id(self, settings: Settings) -> str:
        return "scaleops.l2-batch-posting"

    def resource_labels(self) -> dict[str, str]:
        return {"scaleops.chains": ",".join(self.chains)}

    def markdown(self, settings: Settings) -> str:
        return render_markdown(self, settings)

    def table(self) -> list[dict[str, Any]]:
        """One row per chain, 8 columns; fees in the chain's coin (ETH or SOL) with their unit."""
        return [
            {
                "chain": name,
                "kind": c.kind,
                "ops posted": c.ops_posted,
                "txs": c.txs,
                "pending": c.pending,
                "failed": c.failed,
                "fees paid (ETH or SOL)": f"{coins(c):.9f} {coin(c)}",
                "fee per op (gwei or lamports)": small(c, c.fee_per_op),
            }
            for name, c in self.chains.items()
        ]

    def nothing_to_report(self) -> bool:
        """The every-5-minutes run found no operation pending and did nothing on any chain."""
        quiet = ("ops_posted", "batches", "txs", "failed", "pending", "fee_capped", "reorged", "bumped")
        return self.ok and not any(getattr(c, f) for c in self.chains.values() for f in quiet)

    def record_chain(self, name: str, result: ChainReport) -> None:
        self.chains[name] = result
        for problem in result.problems:
            self.problem(REDACTOR.text(problem))


MAX_TX_LINKS = 25  # per chain; the JSON report keeps every hash
GWEI = 10**9
SOLANA_TX_LIMIT = 1232  # bytes of one Solana transaction


def is_solana(c: ChainReport) -> bool:
    return c.kind == "solana"


def fees_paid(c: ChainReport) -> int:
    """What the chain's transactions cost this run, in wei (EVM: L2 + L1 data fee) or lamports."""
    return (c.lamports or 0) if is_solana(c) else c.l2_fee_wei + c.l1_fee_wei


def coin(c: ChainReport) -> str:
    return "SOL" if is_solana(c) else "ETH"


def coins(c: ChainReport) -> float:
    """The fees paid in the chain's coin: wei / 1e18 ETH, lamports / 1e9 SOL."""
    return fees_paid(c) / (10**9 if is_solana(c) else 10**18)


def gwei(wei: int) -> str:
    """wei in gwei, up to 6 decimals: 1,500,000 / 0.000021."""
    return f"{wei / GWEI:,.6f}".rstrip("0").rstrip(".")


def small(c: ChainReport, amount: int) -> str:
    """An amount in gwei (EVM) or lamports (Solana), with its unit."""
    return f"{amount:,} lamports" if is_solana(c) else f"{gwei(amount)} gwei"


def fee_cap(settings: Settings, chain: str, per_coin: int) -> str:
    """The chain's MAX_FEE_PER_BATCH in its coin: the target beside what was paid."""
    config = settings.chains.get(chain)
    return "n/a" if config is None else f"{config.max_fee_per_batch / per_coin:g}"


def tx_link(explorer: str | None, tx_hash: str) -> str:
    """`<explorer>/tx/<hash>` keeping the explorer URL's query (Solana's `?cluster=...`), as markdown;
    the bare hash when no explorer is set."""
    if not explorer:
        return f"`{tx_hash}`"
    split = urlsplit(explorer)
    url = urlunsplit(split._replace(path=f"{split.path.rstrip('/')}/tx/{tx_hash}"))
    return f"[`{tx_hash}`]({url})"


def render_markdown(report: L2PostingReport, settings: Settings) -> str:
    evm = {n: c for n, c in report.chains.items() if not is_solana(c)}
    sol = {n: c for n, c in report.chains.items() if is_solana(c)}
    lines = [
        f"# L2 batch posting: {'OK' if report.ok else 'PROBLEMS FOUND'}",
        "",
        f"as of `{report.as_of.isoformat()}`",
        "",
        "## Operations",
        "",
        "| chain | kind | ops posted | batches | txs | pending ops | failed ops | fee-capped batches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report.chains.items():
        lines.append(
            f"| {name} | {c.kind} | {c.ops_posted} | {c.batches} | {c.txs} | {c.pending} | {c.failed} "
            f"| {c.fee_capped} |"
        )
    if evm:
        lines += [
            "",
            "## Fees (EVM): the L2 execution fee plus the L1 data fee",
            "",
            "| chain | gas used | L2 fee (gwei) | L1 data fee (gwei) | total (ETH) | total (wei) "
            "| per op (gwei) | cap per batch (ETH) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, c in evm.items():
            total = fees_paid(c)
            lines.append(
                f"| {name} | {c.gas_used:,} | {gwei(c.l2_fee_wei)} | {gwei(c.l1_fee_wei)} "
                f"| {coins(c):.9f} | {total} | {gwei(c.fee_per_op)} | {fee_cap(settings, name, 10**18)} |"
            )
    if sol:
        lines += [
            "",
            "## Fees (Solana)",
            "",
            f"| chain | fees (lamports) | fees (SOL) | per op (lamports) | largest tx (bytes, limit "
            f"{SOLANA_TX_LIMIT}) | cap per batch (SOL) |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in sol.items():
            lamports = c.lamports or 0
            largest = "-" if c.max_tx_bytes is None else f"{c.max_tx_bytes:,}"
            lines.append(
                f"| {name} | {lamports:,} | {coins(c):.9f} | {c.fee_per_op:,} | {largest} "
                f"| {fee_cap(settings, name, 10**9)} |"
            )
    if any(c.bumped or c.reorged or c.resigned for c in report.chains.values()):
        lines += [
            "",
            "## Recovered",
            "",
            "| chain | fee bumps (replacement txs) | reorged batches (re-posted) | re-signed (Solana) |",
            "|---|---|---|---|",
        ]
        for name, c in report.chains.items():
            lines.append(f"| {name} | {c.bumped} | {c.reorged} | {c.resigned} |")
    if any(c.batch_hashes for c in report.chains.values()):
        lines += ["", "## Transactions", ""]
        for name, c in report.chains.items():
            if not c.batch_hashes:
                continue
            config = settings.chains.get(name)
            explorer = config.explorer_url if config else None
            shown = [tx_link(explorer, h) for h in c.batch_hashes[:MAX_TX_LINKS]]
            more = len(c.batch_hashes) - MAX_TX_LINKS
            lines.append(f"- {name}: {', '.join(shown)}" + (f" (and {more} more)" if more > 0 else ""))
    if report.problems:
        lines += ["", "## Problems", *[f"- {p}" for p in report.problems]]
    return "\n".join(lines)
