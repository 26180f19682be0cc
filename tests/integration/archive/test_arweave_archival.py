"""arweave-archival against the sandbox: arlocal (a miner every 2 s) and the PostgreSQL primary, each
test on a scratch ledger database of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaleops.core.settings import Settings, load_settings
from tasks.archive import ledger
from tasks.archive.ans104 import generate_jwk, wallet_from_jwk
from tasks.archive.ledger import NewContent
from tasks.archive.report import ArchiveReport
from tasks.archive.steps import archive_pass, verify_pass

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def archive_env(sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The sandbox's settings with a scratch ledger database (dropped afterwards)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    base = sandbox_env["SCALEOPS_POSTGRES__DSN"]
    name = f"archivetest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    params = conninfo_to_dict(base)
    params["dbname"] = name
    # a wallet of the test's own, funded by arlocal's /mint: balances are not shared with other runs
    jwk = json.dumps(generate_jwk())
    address = wallet_from_jwk(jwk).address
    httpx.get(
        f"{sandbox_env['SCALEOPS_ARCHIVE__GATEWAY_URL']}/mint/{address}/{10**15}", timeout=30
    ).raise_for_status()
    env = {
        **sandbox_env,
        "SCALEOPS_POSTGRES__DSN": make_conninfo("", **params),
        "SCALEOPS_ARCHIVE__WALLET_JWK": jwk,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


def queue(settings: Settings, *contents: tuple[str, bytes]) -> tuple[int, int]:
    with ledger_conn(settings) as conn:
        return ledger.add_content(conn, [NewContent.of(k, b, "text/plain") for k, b in contents])


def ledger_conn(settings: Settings) -> Any:
    import psycopg

    conn = psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True)
    ledger.ensure_schema(conn)
    return conn


def balance(settings: Settings) -> int:
    address = wallet_from_jwk(settings.archive.wallet_jwk.get_secret_value()).address  # type: ignore[union-attr]
    return int(httpx.get(f"{settings.archive.gateway_url}/wallet/{address}/balance", timeout=10).text)


def run_flow(**params: Any) -> ArchiveReport:
    from flows.arweave_archival import arweave_archival
    from scaleops.core.reporting import report_of

    state = arweave_archival(**params, return_state=True)
    result = report_of(state)
    assert isinstance(result, ArchiveReport), state
    return result


def until_settled(settings: Settings, want: str = "verified", timeout: float = 60) -> dict[str, int]:
    """Run reconcile + verify (no new signing) until no item is signed/posted/confirmed any more."""
    deadline = time.monotonic() + timeout
    while True:
        archive_pass.fn(settings, False)
        verify_pass.fn(settings, 0.0)
        with ledger_conn(settings) as conn:
            counts: dict[str, int] = ledger.status_counts(conn)["items"]
        if not any(counts[s] for s in ("signed", "posted", "confirmed")):
            return counts
        assert time.monotonic() < deadline, f"not settled in {timeout} s: {counts}"
        time.sleep(1)


def bundles(settings: Settings) -> list[tuple[str, str, int]]:
    with ledger_conn(settings) as conn:
        rows = conn.execute(
            "select tx_id, status, winston from archive_bundles order by created_at"
        ).fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


# ------------------------------------------------------------------------------------------------ tests
def test_archive_confirm_verify_and_a_second_run_pays_nothing(archive_env: dict[str, str]) -> None:
    settings = load_settings()
    unique = uuid.uuid4().hex.encode()
    added, deduplicated = queue(
        settings,
        ("nft/1.json", b'{"n": 1}' + unique),
        ("copy/of/1.json", b'{"n": 1}' + unique),
        ("log", unique),
    )
    assert (added, deduplicated) == (2, 1)  # the same bytes under two names are one item
    before = balance(settings)

    first = run_flow()
    assert first.items_signed == 2 and first.items_posted == 2 and len(first.bundles) == 1
    assert first.winston_paid == first.bundles[0].winston > 0
    assert balance(settings) == before - first.winston_paid

    counts = until_settled(settings)
    assert counts["verified"] == 2, counts

    again = run_flow(verify_sample=1.0)
    assert again.ok, again.problems
    assert again.winston_paid == 0 and again.bundles == [] and again.items_signed == 0
    assert again.items_verified == 2  # the whole sample re-verified
    assert balance(settings) == before - first.winston_paid
    assert len(bundles(settings)) == 1


def test_a_forged_item_is_corrupt_although_the_gateway_serves_it(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.archive import archiver
    from tasks.archive.ans104 import DataItem, bundle_items

    def forge(items: list[DataItem]) -> bytes:  # the "forged" item's data changed after signing
        forged = [
            DataItem(i.raw[:-1] + bytes([i.raw[-1] ^ 1])) if i.data.startswith(b"forged") else i
            for i in items
        ]
        return bundle_items(forged)

    settings = load_settings()
    token = uuid.uuid4().hex.encode()
    queue(settings, ("good", b"good " + token), ("forged", b"forged " + token))
    monkeypatch.setattr(archiver, "bundle_items", forge)
    part = archive_pass.fn(settings, False)
    assert part.items_posted == 2
    # arlocal serves the forged bundle's items at once but never mines the bundle (its miner runs
    # arbundles' verify); an Arweave miner does not look inside a bundle and would mine it. Record the
    # confirmation Arweave would give, then verify as the duty does.
    with ledger_conn(settings) as conn:
        ledger.mark_confirmed(conn, part.bundles[0].tx_id, None)
    verify_pass.fn(settings, 0.0)
    with ledger_conn(settings) as conn:
        counts = ledger.status_counts(conn)["items"]
    assert counts["verified"] == 1 and counts["corrupt"] == 1, counts
    with ledger_conn(settings) as conn:
        row = conn.execute(
            "select first_key, error, item_id from archive_items where status = 'corrupt'"
        ).fetchone()
    assert row[0] == "forged" and "signature" in row[1]
    served = httpx.get(f"{settings.archive.gateway_url}/{row[2]}", timeout=10)
    assert served.status_code == 200  # arlocal serves it all the same: only our check caught it


@pytest.mark.parametrize("step", ["signed", "sent", "posted"])
def test_sigkill_at_any_step_pays_once(archive_env: dict[str, str], step: str) -> None:
    settings = load_settings()
    token = uuid.uuid4().hex.encode()
    queue(settings, *((f"k{i}", token + bytes([i])) for i in range(3)))
    before = balance(settings)
    code = "from scaleops.core.settings import load_settings; from tasks.archive.steps import archive_pass; "
    code += "archive_pass.fn(load_settings(), False)"
    env = {**os.environ, "SCALEOPS_ARCHIVE_CRASH_AT": step}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    written = bundles(settings)
    assert len(written) == 1  # written ahead before the crash

    part = archive_pass.fn(settings, False)  # reconciles first: posts only what never reached the gateway
    assert part.items_signed == 0
    counts = until_settled(settings)
    assert counts["verified"] == 3, counts
    assert bundles(settings) == [(written[0][0], "confirmed", written[0][2])]
    assert balance(settings) == before - written[0][2]


def test_budget_cap_stops_before_passing_it(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEOPS_ARCHIVE__MAX_BUNDLE_BYTES", "4096")  # one item per bundle
    token = uuid.uuid4().hex.encode()
    settings = load_settings()
    queue(settings, *((f"b{i}", token * 40 + bytes([i])) for i in range(3)))
    price = int(httpx.get(f"{settings.archive.gateway_url}/price/3000", timeout=10).text)
    monkeypatch.setenv("SCALEOPS_ARCHIVE__MAX_WINSTON_PER_RUN", str(int(price * 1.5)))
    report = run_flow()
    assert report.budget_capped and report.outcome() == "budget-cap" and not report.ok
    assert len(report.bundles) == 1 and report.winston_paid <= int(price * 1.5)
    with ledger_conn(load_settings()) as conn:
        assert ledger.status_counts(conn)["items"]["queued"] == 2


def test_an_unfunded_wallet_refuses_to_start(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEOPS_ARCHIVE__WALLET_JWK", json.dumps(generate_jwk()))
    settings = load_settings()
    queue(settings, ("x", uuid.uuid4().hex.encode()))
    part = archive_pass.fn(settings, False)
    assert not part.ok and "refused to start" in part.problems[0] and part.items_signed == 0
    assert bundles(settings) == []


def test_a_dropped_bundle_is_requeued_and_signed_anew_once(archive_env: dict[str, str]) -> None:
    settings = load_settings()
    queue(settings, ("dropped", uuid.uuid4().hex.encode()))
    with ledger_conn(settings) as conn:
        # a bundle the gateway never saw, posted long ago (its height far behind the chain's)
        item = ledger.queued(conn)[0]
        fake = ledger.Bundle("F" * 43, "gateway", "signed", {"id": "F" * 43}, 1, 100, 5)
        ledger.write_ahead(conn, fake, b"x", [(item.sha256, "I" * 43, 5)])
        conn.execute("update archive_bundles set status = 'posted', posted_height = -1000")
        conn.execute("update archive_items set status = 'posted'")
    part = archive_pass.fn(settings, False)
    assert [f.key for f in part.reposted] == ["dropped"]
    assert part.items_signed == 1  # signed anew in the same run, with a new signature
    counts = until_settled(settings)
    assert counts["verified"] == 1, counts
    with ledger_conn(settings) as conn:
        assert conn.execute("select reposts from archive_items").fetchone()[0] == 1


def test_cli_add_and_status(archive_env: dict[str, str], tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(b'{"same": true}')
    b.write_bytes(b'{"same": true}')
    env = {**os.environ, **archive_env}
    cli = [sys.executable, "-m", "scaleops.cli", "archive"]
    added = subprocess.run([*cli, "add", str(a), str(b), "--json"], env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["added"] == 1 and json.loads(added.stdout)["deduplicated"] == 1
    status = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True)
    assert json.loads(status.stdout)["items"]["queued"] == 1


def test_cli_tags_are_checked_stored_and_signed_into_the_item(
    archive_env: dict[str, str], tmp_path: Path
) -> None:
    from tasks.archive.ans104 import unbundle
    from tasks.archive.gateway import Gateway

    f = tmp_path / "meta.json"
    f.write_bytes(b'{"tagged": "' + uuid.uuid4().hex.encode() + b'"}')
    env = {**os.environ, **archive_env}
    cli = [sys.executable, "-m", "scaleops.cli", "archive", "add", str(f)]
    for bad, says in (
        (["--tag", "Collection"], "not name=value"),
        (["--tag", "Content-SHA256=" + "0" * 64], "set by scaleops itself"),
        (["--tag", "Big=" + "v" * 3073], "values 1-3072 bytes"),
    ):
        refused = subprocess.run([*cli, *bad], env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "--tag" in refused.stderr and says in refused.stderr, (
            refused.stderr
        )
        assert "Traceback" not in refused.stderr
    tags = ["--tag", "Collection=apes", "--tag", "Query=a=b"]
    added = subprocess.run([*cli, *tags, "--json"], env=env, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    settings = load_settings()
    with ledger_conn(settings) as conn:
        (stored,) = conn.execute("select tags from archive_items").fetchone()
    assert stored == [["Collection", "apes"], ["Query", "a=b"]]

    report = run_flow()
    assert report.items_posted == 1, report.problems
    with ledger_conn(settings) as conn:
        item_id, bundle_id = conn.execute("select item_id, bundle_id from archive_items").fetchone()
    with Gateway(settings.archive.gateway_url or "") as gw:
        served = gw.data(bundle_id)
    assert served is not None
    (item,) = [i for i_id, i in unbundle(served) if i_id == item_id]
    assert item.verify() and item.tags[-2:] == [("Collection", "apes"), ("Query", "a=b")]


def test_wallet_key_never_leaves(archive_env: dict[str, str]) -> None:
    settings = load_settings()
    queue(settings, ("secret-check", uuid.uuid4().hex.encode()))
    report = run_flow()
    jwk = json.loads(settings.archive.wallet_jwk.get_secret_value())  # type: ignore[union-attr]
    dumped = report.model_dump_json() + report.markdown(settings)
    assert jwk["d"] not in dumped and jwk["p"] not in dumped
    assert jwk["d"] in settings.secrets()


def test_ipfs_pinned_verified_then_garbage_collected_is_missing_and_repaired(
    archive_env: dict[str, str],
) -> None:
    from tasks.archive.ipfs import IpfsNode, raw_cid, same_cid

    settings = load_settings()
    body = b"ipfs " + uuid.uuid4().hex.encode() * 20
    big = uuid.uuid4().hex.encode() * 20_000  # 640 KB: a UnixFS DAG of three raw leaves
    queue(settings, ("media/small.txt", body), ("media/big.bin", big))
    first = run_flow()
    assert first.ipfs.pinned == 2
    with ledger_conn(settings) as conn:
        cids = dict(conn.execute("select first_key, ipfs_cid from archive_items").fetchall())
    assert same_cid(cids["media/small.txt"], raw_cid(body) or "")
    until_settled(settings)

    checked = run_flow(verify_sample=1.0)
    assert checked.ok and checked.ipfs.verified == 2, (checked.problems, checked.ipfs)

    assert settings.archive.ipfs_api_url
    with IpfsNode(settings.archive.ipfs_api_url) as node:
        node.unpin(cids["media/big.bin"])
        node.gc()
    lost = run_flow(verify_sample=1.0)
    assert not lost.ok and [f.key for f in lost.ipfs.missing] == ["media/big.bin"]
    assert lost.items_verified == 2  # still safe on Arweave

    repaired = run_flow(verify_sample=1.0, repair=True)
    assert [f.key for f in repaired.repaired] == ["media/big.bin"] and repaired.winston_paid == 0
    again = run_flow(verify_sample=1.0)
    assert again.ok and again.ipfs.verified == 2, (again.problems, again.ipfs)


def test_s3_prefix_and_postgres_query_sources(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from scaleops.core.clients import s3_client

    settings = load_settings()
    token = uuid.uuid4().hex
    s3 = s3_client(settings)
    bucket = settings.s3.primary_bucket
    prefix = f"archive-test/{token}/"
    s3.put_object(Bucket=bucket, Key=f"{prefix}a.json", Body=b'{"a": "' + token.encode() + b'"}')
    s3.put_object(Bucket=bucket, Key=f"{prefix}b.json", Body=b"shared " + token.encode())
    with psycopg.connect(settings.postgres.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute("create table nft_meta (key text, content_type text, body bytea)")
        conn.execute(
            "insert into nft_meta values ('nft/1', 'application/json', %s), ('nft/2', 'text/plain', %s)",
            (b'{"nft": 1, "t": "' + token.encode() + b'"}', b"shared " + token.encode()),
        )
    sources = {
        "media": {"kind": "s3", "url": f"s3://{bucket}/{prefix}"},
        "meta": {"kind": "postgres", "query": "select key, content_type, body from nft_meta"},
    }
    monkeypatch.setenv("SCALEOPS_ARCHIVE__SOURCES", json.dumps(sources))
    first = run_flow()
    assert first.collected == {"media": 2, "meta": 1} and first.deduplicated == 1  # 'shared' twice
    assert first.items_signed == 3
    again = run_flow()  # the S3 watermark holds, the query's rows are all known
    assert again.collected == {"media": 0, "meta": 0} and again.items_signed == 0 and again.winston_paid == 0
    assert until_settled(load_settings())["verified"] == 3
    with ledger_conn(load_settings()) as conn:
        keys = conn.execute(
            "select keys from archive_items where first_key like '%b.json' or first_key = 'nft/2'"
        )
        (shared,) = keys.fetchone()
    assert sorted(shared) == sorted([f"s3://{bucket}/{prefix}b.json", "nft/2"])


def test_postgres_source_reads_past_its_watermark_which_moves_after_the_ledger_commit(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.archive.steps import collect_source

    token = uuid.uuid4().hex
    settings = load_settings()
    with ledger_conn(settings) as conn:
        conn.execute("create table audit_log (id bigint, key text, content_type text, body bytea)")
        conn.execute(
            "insert into audit_log select i, 'log/' || i, 'text/plain', convert_to(%s || i, 'UTF8')"
            " from generate_series(1, 3) i",
            (token,),
        )
    query = "select key, content_type, body, id from audit_log"
    sources = {"logs": {"kind": "postgres", "query": query, "watermark": "id"}}
    monkeypatch.setenv("SCALEOPS_ARCHIVE__SOURCES", json.dumps(sources))
    settings = load_settings()

    def watermark() -> str | None:
        with ledger_conn(settings) as conn:
            return ledger.source_watermark(conn, "logs")

    assert collect_source.fn(settings, "logs") == (3, 0) and watermark() == "3"
    with ledger_conn(settings) as conn:
        conn.execute("update audit_log set body = 'changed' where id = 1")  # behind the watermark: not read
        conn.execute(
            "insert into audit_log values (4, 'log/4', 'text/plain', convert_to(%s || '4', 'UTF8')),"
            " (5, 'log/again', 'text/plain', convert_to(%s || '2', 'UTF8'))",  # the bytes of log/2
            (token, token),
        )
    assert collect_source.fn(settings, "logs") == (1, 1) and watermark() == "5"
    assert collect_source.fn(settings, "logs") == (0, 0)  # nothing past 5

    # a SIGKILL after the ledger commit and before the watermark moves: the rows are read again,
    # deduplicated, and the watermark moves then
    with ledger_conn(settings) as conn:
        conn.execute(
            "insert into audit_log values (6, 'log/6', 'text/plain', convert_to(%s || '6', 'UTF8'))", (token,)
        )
    code = (
        "from scaleops.core.settings import load_settings; from tasks.archive.steps import collect_source; "
    )
    code += "collect_source.fn(load_settings(), 'logs')"
    env = {**os.environ, "SCALEOPS_ARCHIVE_CRASH_AT": "collected"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert watermark() == "5"
    with ledger_conn(settings) as conn:
        assert ledger.status_counts(conn)["items"]["queued"] == 5  # log/6 committed before the kill
    assert collect_source.fn(settings, "logs") == (0, 1) and watermark() == "6"
    with ledger_conn(settings) as conn:
        keys = sorted(k for (ks,) in conn.execute("select keys from archive_items") for k in ks)
    assert keys == ["log/1", "log/2", "log/3", "log/4", "log/6", "log/again"]


def test_postgres_batches_never_split_rows_sharing_a_watermark_value(archive_env: dict[str, str]) -> None:
    from tasks.archive.collect import postgres_batches

    settings = load_settings()
    with ledger_conn(settings) as conn:
        conn.execute("create table meta (key text, content_type text, body bytea, updated_at timestamptz)")
        conn.execute(
            "insert into meta values ('a', 'text/plain', 'a', '2026-01-01T00:00Z'),"
            " ('b', 'text/plain', 'b', '2026-01-01T00:00Z'), ('c', 'text/plain', 'c', '2026-01-01T00:00Z'),"
            " ('d', 'text/plain', 'd', '2026-01-02T00:00Z'), ('e', 'text/plain', 'e', null)"
        )
        query = "select key, content_type, body, updated_at from meta"
        got = [
            ([c.key for c in found], mark)
            for found, mark in postgres_batches(conn, query, "updated_at", None, batch=2)
        ]
        assert [sorted(keys) for keys, _ in got] == [["a", "b", "c"], ["d"]]
        assert got[1][1].startswith("2026-01-02")
        after = list(postgres_batches(conn, query, "updated_at", got[0][1], batch=2))
        assert [[c.key for c in found] for found, _ in after] == [["d"]]


def test_a_ledger_that_lost_the_record_finds_the_item_by_tag_and_pays_nothing(
    archive_env: dict[str, str],
) -> None:
    settings = load_settings()
    queue(settings, ("lost/record.json", b'{"lost": "' + uuid.uuid4().hex.encode() + b'"}'))
    first = run_flow()
    assert first.items_posted == 1
    assert until_settled(settings)["verified"] == 1
    with ledger_conn(settings) as conn:
        (item_id,) = conn.execute("select item_id from archive_items").fetchone()
        # as if the process died between posting and recording: the ledger has no id, no bundle
        conn.execute(
            "update archive_items set status = 'queued', item_id = null, bundle_id = null, winston = 0"
        )
        conn.execute("delete from archive_bundles")
    before = balance(settings)

    again = run_flow()
    assert again.items_signed == 0 and again.winston_paid == 0 and again.bundles == [], again.problems
    assert [f.key for f in again.found_by_tag] == ["lost/record.json"]
    assert again.items_verified == 1 and again.ok, again.problems  # verified by tag (arlocal: no bundledIn)
    assert balance(settings) == before
    with ledger_conn(settings) as conn:
        assert conn.execute("select item_id, status from archive_items").fetchone() == (item_id, "verified")
    assert bundles(settings) == []


def test_a_bundle_above_the_threshold_is_uploaded_by_chunks(
    archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEOPS_ARCHIVE__CHUNKED_ABOVE_BYTES", str(256 * 1024))
    settings = load_settings()
    token = uuid.uuid4().hex.encode()
    bodies = {f"media/{i}.bin": (token + bytes([i])) * (12_000 + 5_000 * i) for i in range(3)}  # ~1.3 MB
    queue(settings, *bodies.items())
    before = balance(settings)
    report = run_flow()
    (bundle,) = report.bundles
    assert bundle.bytes > 256 * 1024 and bundle.chunks == -(-bundle.bytes // (256 * 1024)), bundle
    assert balance(settings) == before - bundle.winston
    # arlocal assembled the bundle from the chunks, unbundled it, and serves each item: verified on our side
    assert until_settled(settings)["verified"] == 3
    with ledger_conn(settings) as conn:
        ids = dict(conn.execute("select first_key, item_id from archive_items").fetchall())
    for key, body in bodies.items():
        assert httpx.get(f"{settings.archive.gateway_url}/{ids[key]}", timeout=30).content == body


@pytest.fixture
def bundler_mode(archive_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    url = archive_env.get("SCALEOPS_ARCHIVE__BUNDLER_URL")
    assert url, "the sandbox's turbo_standin service (scaleops sandbox up)"
    monkeypatch.setenv("SCALEOPS_ARCHIVE__MODE", "bundler")
    return url


def test_bundler_mode_uploads_signed_items_to_the_standin_and_confirms_them(bundler_mode: str) -> None:
    settings = load_settings()
    token = uuid.uuid4().hex.encode()
    queue(settings, *((f"turbo/{i}.json", token + bytes([i])) for i in range(3)))
    ours = balance(settings)
    report = run_flow()
    (batch,) = report.bundles
    assert batch.mode == "bundler" and batch.items == 3 and report.items_posted == 3, report.problems
    assert batch.winston == report.winston_paid > 0  # the receipts' winc
    assert balance(settings) == ours  # the upload service pays the gateway, not our wallet
    with ledger_conn(settings) as conn:
        (receipts,) = conn.execute("select receipt from archive_bundles").fetchone()
        ids = [r[0] for r in conn.execute("select item_id from archive_items order by first_key")]
    assert sorted(receipts) == sorted(ids) and all(receipts[i]["id"] == i for i in ids)
    # the stand-in bundles them to arlocal; our side verifies each item inside that bundle
    assert until_settled(settings)["verified"] == 3
    with ledger_conn(settings) as conn:
        (in_bundle,) = conn.execute("select distinct bundle_id from archive_items").fetchone()
    assert not in_bundle.startswith("bundler-")  # the service's L1 bundle, not our batch name
    status = httpx.get(f"{bundler_mode}/tx/{ids[0]}/status", timeout=10).json()
    assert status["bundleId"] == in_bundle


def test_the_standin_refuses_a_forged_item_and_answers_a_repeat_with_its_receipt(bundler_mode: str) -> None:
    from tasks.archive.ans104 import create_data_item

    settings = load_settings()
    wallet = wallet_from_jwk(settings.archive.wallet_jwk.get_secret_value())  # type: ignore[union-attr]
    item = create_data_item(wallet, uuid.uuid4().hex.encode(), [("App-Name", "standin-test")])
    post = f"{bundler_mode}/tx/arweave"
    forged = httpx.post(post, content=item.raw[:-1] + bytes([item.raw[-1] ^ 1]), timeout=30)
    assert forged.status_code == 400 and "signature" in forged.text
    first = httpx.post(post, content=item.raw, timeout=30)
    again = httpx.post(post, content=item.raw, timeout=30)
    assert (first.status_code, again.status_code) == (200, 202)
    assert first.json() == again.json() and first.json()["id"] == item.id


@pytest.mark.parametrize("step", ["signed", "sent"])
def test_bundler_mode_sigkill_pays_once(bundler_mode: str, step: str) -> None:
    settings = load_settings()
    token = uuid.uuid4().hex.encode()
    queue(settings, *((f"kill/{i}", token + bytes([i])) for i in range(2)))
    code = "from scaleops.core.settings import load_settings; from tasks.archive.steps import archive_pass; "
    code += "archive_pass.fn(load_settings(), False)"
    env = {**os.environ, "SCALEOPS_ARCHIVE_CRASH_AT": step}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120, capture_output=True)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    part = archive_pass.fn(settings, False)  # reconciles: uploads again; the service knows what it has
    assert part.items_signed == 0 and part.items_posted == 2
    charged = bundles(settings)[0][2]
    if step == "sent":  # the service had both items: nothing charged again
        assert part.winston_paid == 0 and charged > 0
    else:
        assert part.winston_paid == charged > 0
    assert until_settled(settings)["verified"] == 2
