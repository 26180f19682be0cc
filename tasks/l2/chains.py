"""Which chains a run posts to, and the one task that posts one chain (EVM or Solana)."""

from __future__ import annotations

from scaleops.core.retry import io_task
from scaleops.core.settings import Settings
from tasks.l2.evm_poster import post_chain
from tasks.l2.poster import ChainReport, PostOptions
from tasks.l2.solana_poster import post_solana_chain


@io_task(task_run_name="l2-post-{chain}")
def post_chain_task(settings: Settings, chain: str, options: PostOptions) -> ChainReport:
    from prefect import get_run_logger

    if settings.chains[chain].kind == "solana":
        return post_solana_chain(settings, chain, options, get_run_logger())
    return post_chain(settings, chain, options, get_run_logger())


def select_chains(settings: Settings, chain: str | None) -> list[str]:
    if chain is not None:
        name = chain.lower()
        if name not in settings.chains:
            known = ", ".join(sorted(settings.chains)) or "none (set SCALEOPS_CHAINS__<NAME>__...)"
            raise ValueError(f"chain: unknown chain {chain!r}; configured: {known}")
        return [name]
    return sorted(settings.chains)
