"""Duty arweave-archival: ledger (ledger.py), sources (collect.py), ANS-104 items and bundles
(ans104.py), the gateway (gateway.py), the IPFS node (ipfs.py), the archiving protocol (archiver.py),
verification (verify.py) and the report (report.py)."""
