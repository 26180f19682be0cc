"""Duty l2-batch-posting: the outbox, the posting protocol (poster.py) and its EVM and Solana chain
families, fee models, the report."""
