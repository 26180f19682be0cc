"""cache-warming's plain functions: RESP, TTL spread, reply parsing, the budget, hit rates, settings."""

from __future__ import annotations

import json
import random
import socket
import threading
from typing import Any

import pytest
import redis.exceptions as rex
from redis.connection import Connection

from scaleops.core.settings import ConfigError, load_settings
from scaleops.sandbox.cache_source import DEMO_WARM_SETS
from tasks.cache.redis import (
    Budget,
    NodeMemory,
    RawPipe,
    TtlPicker,
    WarmWriteError,
    hit_rate_since,
    parse_replies,
    set_commands,
    ttl_bounds,
)
from tasks.cache.source import pick_warm_set, prefetched, warm_rows_sql


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SCALEOPS_"):
            monkeypatch.delenv(key)


def test_set_commands_are_the_resp_redis_py_would_send() -> None:
    rows: list[tuple[bytes | None, bytes | None]] = [(b"k:1", b"v" * 200), (b"k:\xc3\xa9", b"a b\r\nc")]
    tails = TtlPicker(100, 0.0).tails(2)
    data, keys, payload = set_commands(rows, tails)
    expected = b"".join(
        b"".join(Connection().pack_command("SET", k, v, "EX", 100)) for k, v in rows if k and v
    )
    assert data == expected
    assert keys == [b"k:1", b"k:\xc3\xa9"]
    assert payload == 3 + 200 + 4 + 6


def test_rows_with_null_key_or_value_are_not_written() -> None:
    rows: list[tuple[bytes | None, bytes | None]] = [(b"a", None), (None, b"x"), (b"b", b"y")]
    data, keys, _ = set_commands(rows, TtlPicker(10, 0).tails(3))
    assert keys == [b"b"] and data.count(b"SET") == 1


@pytest.mark.parametrize("ttl, jitter", [(1000, 0.2), (30 * 24 * 3600, 0.5), (1, 0.9), (60, 0.0)])
def test_ttls_spread_uniformly_inside_the_bounds(ttl: int, jitter: float) -> None:
    low, high = ttl_bounds(ttl, jitter)
    assert low >= 1 and low <= ttl <= high
    picker = TtlPicker(ttl, jitter, rng=random.Random(7))
    values = [int(t.split(b"\r\n")[3]) for t in picker.tails(5000)]
    assert all(low <= v <= high for v in values)
    if high - low > 100:
        span = high - low
        assert min(values) < low + span * 0.05 and max(values) > high - span * 0.05
        below_mid = sum(v < low + span / 2 for v in values)
        assert 2000 < below_mid < 3000  # uniform, not clustered


def test_parse_replies_splits_one_batch_from_the_next() -> None:
    lines, rest = parse_replies(b"+OK\r\n+OK\r\n-OOM no\r\n+OK\r\n", 3)
    assert lines == [b"+OK", b"+OK", b"-OOM no"] and rest == b"+OK\r\n"


class FakeConnection:
    def __init__(self, sock: socket.socket):
        self._sock = sock

    def connect(self) -> None:
        """Already connected."""

    def disconnect(self) -> None:
        self._sock.close()


def serve(reply: bytes) -> tuple[RawPipe, socket.socket]:
    ours, theirs = socket.socketpair()
    pipe = RawPipe("fake", FakeConnection(ours), depth=1)

    def answer() -> None:
        theirs.recv(1 << 16)
        theirs.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    return pipe, theirs


def test_raw_pipe_counts_only_acknowledged_writes() -> None:
    pipe, theirs = serve(b"+OK\r\n+OK\r\n")
    pipe.send(b"two commands", 2, 50)
    pipe.drain()
    assert (pipe.acked_keys, pipe.acked_bytes) == (2, 50)
    theirs.close()


@pytest.mark.parametrize(
    "reply, error",
    [
        (b"+OK\r\n-OOM command not allowed when used memory > 'maxmemory'.\r\n", WarmWriteError),
        (b"-MOVED 3999 127.0.0.1:7001\r\n+OK\r\n", rex.TryAgainError),
        (b"+OK\r\n", rex.ConnectionError),  # then the server goes away
    ],
)
def test_raw_pipe_raises_on_refusals_and_lost_connections(reply: bytes, error: type[Exception]) -> None:
    pipe, theirs = serve(reply)
    pipe.send(b"two commands", 2, 50)
    if error is rex.ConnectionError:
        threading.Timer(0.2, theirs.close).start()
    with pytest.raises(error):
        pipe.drain()
    assert pipe.acked_keys == 0  # nothing counted for a batch that did not fully succeed
    theirs.close()


def node(used: int, maxmemory: int) -> NodeMemory:
    return NodeMemory(name="n", used_memory=used, maxmemory=maxmemory, policy="allkeys-lru")


def test_budget_blocks_a_batch_that_would_pass_it() -> None:
    budget = Budget([node(1_000_000, 10_000_000)], 0.8)
    assert budget.limits == [8_000_000]
    per_key = budget.per_key([1_000_000], 0, payload_per_key=200)
    assert per_key == 296  # payload + overhead before anything is measured
    assert budget.blocked([7_000_000], [0], [1000], per_key) == ""
    assert "would pass the budget" in budget.blocked([7_500_000], [1000], [1000], per_key)
    # measured cost once enough keys are in: (used now - used at start) / keys acknowledged
    assert budget.per_key([3_000_000], 5000, payload_per_key=200) == 400


def test_budget_uses_machine_memory_when_maxmemory_is_unset() -> None:
    n = NodeMemory(name="n", used_memory=0, maxmemory=0, policy="noeviction", total_system_memory=1000)
    assert Budget([n], 0.5).limits == [500]


def test_hit_rate_since_last_run() -> None:
    assert hit_rate_since({}, 10, 10)[0] is None
    rate, note = hit_rate_since({"hits": "100", "misses": "100", "run_at": "t0"}, 190, 110)
    assert rate == pytest.approx(0.9) and "t0" in note
    rate, note = hit_rate_since({"hits": "100", "misses": "100"}, 3, 1)
    assert rate == pytest.approx(0.75) and "reset" in note
    assert hit_rate_since({"hits": "1", "misses": "1"}, 1, 1)[0] is None


def test_prefetched_passes_batches_and_errors_and_stops_early() -> None:
    assert list(prefetched(iter([[1], [2], [3]]))) == [[1], [2], [3]]

    def broken() -> Any:
        yield [1]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetched(broken()))
    endless = prefetched(iter(range(10**9)))
    assert next(endless) == 0
    endless.close()  # the budget stops reading: the thread ends


def test_warm_query_is_wrapped_not_edited() -> None:
    sql = warm_rows_sql("select a, b from t order by h desc", 2, "json", 10)
    assert "from (select a, b from t order by h desc) as q(k, v)" in sql
    assert "to_json(q.v)" in sql and sql.endswith("limit 10")
    # a `%` in the warm set's SQL survives psycopg's placeholder parsing (the statement has parameters)
    assert "like 'a%%'" in warm_rows_sql("select a, b from t where a like 'a%'", 2, "text", None)


def test_warm_set_settings_are_validated_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().cache.warm_sets == {}  # production has no default warm set
    monkeypatch.setenv("SCALEOPS_CACHE__WARM_SETS", json.dumps(DEMO_WARM_SETS))  # what the sandbox exports
    assert "demo" in load_settings().cache.warm_sets
    monkeypatch.setenv(
        "SCALEOPS_CACHE__WARM_SETS",
        json.dumps({"a": {"query": "select 1; drop table x"}, "b": {"query": "select 1", "ttl_seconds": 0}}),
    )
    with pytest.raises(ConfigError) as caught:
        load_settings()
    names = [name for name, _ in caught.value.problems]
    assert names == ["SCALEOPS_CACHE__WARM_SETS__A__QUERY", "SCALEOPS_CACHE__WARM_SETS__B__TTL_SECONDS"]
    monkeypatch.setenv("SCALEOPS_CACHE__WARM_SETS", json.dumps({"bad name": {"query": "select 1"}}))
    with pytest.raises(ConfigError, match="SCALEOPS_CACHE__WARM_SETS"):
        load_settings()


def test_pick_warm_set(monkeypatch: pytest.MonkeyPatch) -> None:
    sets = {"a": {"query": "select 1, 2"}, "b": {"query": "select 1, 2"}}
    monkeypatch.setenv("SCALEOPS_CACHE__WARM_SETS", json.dumps(sets))
    settings = load_settings()
    assert pick_warm_set(settings, "b")[0] == "b"
    with pytest.raises(ValueError, match="choose one of the warm sets"):
        pick_warm_set(settings, None)
    with pytest.raises(ValueError, match="unknown warm set 'c'"):
        pick_warm_set(settings, "c")


class FakeMemoryPipe:
    """A pipe whose Redis acknowledges a batch `depth` batches later (as RawPipe does) and where every
    acknowledged key costs `cost` bytes: used memory is `base + acked × cost`."""

    def __init__(self, depth: int = 2):
        self.depth = depth
        self.in_flight: list[tuple[int, int]] = []
        self.acked_keys = 0
        self.acked_bytes = 0

    @property
    def outstanding_keys(self) -> int:
        return sum(n for n, _ in self.in_flight)

    def send(self, data: bytes, replies: int, payload_bytes: int) -> None:
        while len(self.in_flight) >= self.depth:
            self.read_one()
        self.in_flight.append((replies, payload_bytes))

    def read_one(self) -> None:
        replies, payload = self.in_flight.pop(0)
        self.acked_keys += replies
        self.acked_bytes += payload

    def drain(self) -> None:
        while self.in_flight:
            self.read_one()


class FakeMemoryTarget:
    """One node: INFO answers `base + acked × cost` (what Redis really holds), counting the questions."""

    def __init__(self, base: int, cost: int):
        self.pipes = [FakeMemoryPipe()]
        self.base, self.cost = base, cost
        self.info_calls = 0
        self.peak = base

    def route(self, keys: list[bytes]) -> list[int]:
        return [0] * len(keys)

    def used(self) -> int:
        used = self.base + self.pipes[0].acked_keys * self.cost
        self.peak = max(self.peak, used)
        return used

    def used_memory(self) -> list[int]:
        self.info_calls += 1
        return [self.used()]


def rows(n_batches: int, size: int = 2000) -> list[list[tuple[bytes | None, bytes | None]]]:
    return [[(b"k%d" % (b * size + i), b"v" * 100) for i in range(size)] for b in range(n_batches)]


@pytest.mark.parametrize("cost", [150, 240])  # below and above the first estimate (payload + 96 B)
def test_projected_budget_asks_info_rarely_and_still_stops_before_the_budget(cost: int) -> None:
    from tasks.cache.redis import warm_batches

    base, maxmemory = 1_000_000, 60_000_000
    results = {}
    for every in (1, 25):
        target = FakeMemoryTarget(base, cost)
        budget = Budget([node(base, maxmemory)], 0.8, check_every=every)
        result = warm_batches(rows(250), target, TtlPicker(3600, 0.1), budget)  # type: ignore[arg-type]
        target.pipes[0].drain()
        # the budget holds: what Redis holds after every acknowledged key, never past 80% of maxmemory
        assert result.stopped_by_budget
        assert target.used() <= 0.8 * maxmemory
        assert target.peak <= 0.8 * maxmemory
        assert result.memory_checks == target.info_calls
        results[every] = (result, target.info_calls)
    per_batch, projected = results[1][0], results[25][0]
    assert results[1][1] == per_batch.batches + 1  # INFO for every batch, and for the one refused
    # every 25th batch, plus a fresh answer for each batch the projection alone would have refused
    assert results[25][1] <= projected.batches // 25 + 2 + 25
    assert results[25][1] * 3 < results[1][1]
    # and it does not stop much earlier than asking every batch: within 3 batches of it
    assert per_batch.keys_written - projected.keys_written <= 3 * 2000


def test_projection_counts_keys_sent_since_the_last_info_answer() -> None:
    budget = Budget([node(0, 1_000_000)], 1.0, overhead=0, margin=1.0, check_every=25)
    assert budget.due()
    budget.measure([100_000], [0], 0)
    assert not budget.due()
    for _ in range(3):
        per_key, reason = budget.check([1000], payload_per_key=100)
        assert (per_key, reason) == (100, "")
        budget.sent([1000])
    # 100 kB measured + 3,000 keys sent since × 100 B = 400 kB; 7,000 more keys would reach 1.1 MB
    assert budget.check([6000], payload_per_key=100)[1] == ""
    assert "would pass the budget" in budget.check([7000], payload_per_key=100)[1]
    for _ in range(22):
        budget.sent([1])
    assert budget.due()  # 25 batches since the answer: ask again
