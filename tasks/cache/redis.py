"""The Redis side of cache warming: pipelined `SET ... EX ttl` inside a memory budget (standalone or
cluster), invalidation, and the state kept between runs for hit rates."""

from __future__ import annotations

import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# Imported once here: tasks run in threads, and a first import of redis from two threads fails.
import redis.cluster  # noqa: F401
from pydantic import BaseModel

from scaleops.core.clients import redis_client, redis_cluster_client
from scaleops.core.retry import io_task
from scaleops.core.settings import Settings, mask_url_password
from tasks.common.health import RedisTarget

# ------------------------------------------------------------------------------------------------ cache
# Cache warming writes through raw sockets with RESP built here, not through redis-py's pipeline: profiling
# showed redis-py spending ~70% of its time packing commands (per-argument encode/isinstance) and parsing
# replies in Python. The connection itself (AUTH, SELECT, TLS) still comes from redis-py.
OK_REPLY = b"+OK"
CRLF = b"\r\n"


class WarmWriteError(RuntimeError):
    """Redis refused writes (OOM, wrong type, ...): a retry would not help."""


@dataclass
class NodeMemory:
    """INFO of one Redis server (a standalone, or one cluster primary) as the budget sees it."""

    name: str
    used_memory: int
    maxmemory: int
    policy: str
    total_system_memory: int = 0
    evicted_keys: int = 0
    keyspace_hits: int = 0
    keyspace_misses: int = 0

    @property
    def limit(self) -> int:
        """maxmemory, or the machine's memory when no maxmemory is set (the OOM killer is the limit then)."""
        return self.maxmemory or self.total_system_memory

    @classmethod
    def from_info(cls, name: str, info: dict[str, Any]) -> NodeMemory:
        return cls(
            name=name,
            used_memory=int(info.get("used_memory", 0)),
            maxmemory=int(info.get("maxmemory", 0)),
            policy=str(info.get("maxmemory_policy", "")),
            total_system_memory=int(info.get("total_system_memory", 0)),
            evicted_keys=int(info.get("evicted_keys", 0)),
            keyspace_hits=int(info.get("keyspace_hits", 0)),
            keyspace_misses=int(info.get("keyspace_misses", 0)),
        )


def ttl_bounds(ttl_seconds: int, jitter: float) -> tuple[int, int]:
    """Integer TTLs spread uniformly over ttl × (1 ± jitter), never below 1 s."""
    low = max(1, round(ttl_seconds * (1 - jitter)))
    high = max(low, round(ttl_seconds * (1 + jitter)))
    return low, high


def _ex_tail(ttl: int) -> bytes:
    digits = b"%d" % ttl
    return b"$2\r\nEX\r\n$%d\r\n%b\r\n" % (len(digits), digits)


class TtlPicker:
    """Uniform random TTLs as ready RESP tails (`EX <ttl>`): a table lookup per key, not formatting."""

    TABLE_MAX = 65_536

    def __init__(self, ttl_seconds: int, jitter: float, rng: random.Random | None = None):
        self.low, self.high = ttl_bounds(ttl_seconds, jitter)
        self.rng = rng or random.Random()
        span = self.high - self.low + 1
        self.table = [_ex_tail(t) for t in range(self.low, self.high + 1)] if span <= self.TABLE_MAX else None

    def tails(self, n: int) -> list[bytes]:
        if self.table is not None:
            return self.rng.choices(self.table, k=n)
        return [_ex_tail(self.rng.randint(self.low, self.high)) for _ in range(n)]


def set_commands(
    rows: Sequence[tuple[bytes | None, bytes | None]], tails: list[bytes]
) -> tuple[bytes, list[bytes], int]:
    """`SET key value EX ttl` for each row with a key and a value: (RESP bytes, keys, key+value bytes)."""
    good = [(k, v) for k, v in rows if k is not None and v is not None]
    data = b"".join(
        [
            b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (len(k), k, len(v), v, tail)
            for (k, v), tail in zip(good, tails, strict=False)
        ]
    )
    keys = [k for k, _ in good]
    return data, keys, sum(map(len, keys)) + sum(len(v) for _, v in good)


def parse_replies(buf: bytes, n: int) -> tuple[list[bytes], bytes]:
    """The first `n` single-line replies in `buf` and what follows them."""
    parts = buf.split(CRLF, n)
    return parts[:n], parts[n] if len(parts) > n else b""


class RawPipe:
    """Pipelined writes on one connection: send a batch, read its replies one batch later (two batches
    in flight, so Redis works while Python builds the next one). Counts only what Redis acknowledged."""

    def __init__(self, name: str, connection: Any, depth: int = 2):
        self.name = name
        self.connection = connection
        connection.connect()
        self.sock = connection._sock  # redis-py made the connection (AUTH/SELECT/TLS); we write RESP to it
        self.depth = depth
        self.buf = b""
        self.in_flight: deque[tuple[int, int]] = deque()  # (replies expected, payload bytes)
        self.acked_keys = 0
        self.acked_bytes = 0

    @property
    def outstanding_keys(self) -> int:
        return sum(n for n, _ in self.in_flight)

    def send(self, data: bytes, replies: int, payload_bytes: int) -> None:
        while len(self.in_flight) >= self.depth:
            self.read_one()
        self.sock.sendall(data)
        self.in_flight.append((replies, payload_bytes))

    def read_one(self) -> None:
        import redis.exceptions as rex

        replies, payload = self.in_flight[0]
        while self.buf.count(CRLF) < replies:
            chunk = self.sock.recv(1 << 18)
            if not chunk:
                raise rex.ConnectionError(f"redis {self.name}: connection closed during a pipeline")
            self.buf += chunk
        lines, self.buf = parse_replies(self.buf, replies)
        if lines.count(OK_REPLY) != replies:
            errors = [line.decode(errors="replace") for line in lines if line != OK_REPLY]
            first = errors[0].lstrip("-")
            if first.startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING")):
                raise rex.TryAgainError(f"redis {self.name}: {first} (topology changed; warm again)")
            raise WarmWriteError(f"redis {self.name} refused {len(errors)} of {replies} writes: {first}")
        self.in_flight.popleft()
        self.acked_keys += replies
        self.acked_bytes += payload

    def drain(self) -> None:
        while self.in_flight:
            self.read_one()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.disconnect()


@dataclass
class WarmTarget:
    """Where keys go: one pipe (standalone) or one per cluster primary, with a slot -> pipe table."""

    names: list[str]
    info_clients: list[Any]  # redis-py clients for INFO, one per node
    pipes: list[RawPipe] = field(default_factory=list)  # same order; empty for an INFO-only view
    slot_owner: list[int] | None = None  # cluster: slot -> index into pipes
    clients_to_close: list[Any] = field(default_factory=list)

    def route(self, keys: list[bytes]) -> list[int]:
        if self.slot_owner is None:
            return [0] * len(keys)
        from redis.crc import key_slot

        owner = self.slot_owner
        return [owner[key_slot(k)] for k in keys]

    def memory(self) -> list[NodeMemory]:
        return [
            NodeMemory.from_info(name, {**c.info("memory"), **c.info("stats")})
            for name, c in zip(self.names, self.info_clients, strict=True)
        ]

    def used_memory(self) -> list[int]:
        return [int(c.info("memory")["used_memory"]) for c in self.info_clients]

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        for client in self.clients_to_close:
            with contextlib.suppress(Exception):
                client.close()


def open_target(settings: Settings, target: RedisTarget) -> WarmTarget:
    """Raw pipes to the standalone Redis or to every cluster primary (slot table from CLUSTER SLOTS)."""
    if target == "standalone":
        client = redis_client(settings)
        conn = client.connection_pool.get_connection()
        name = mask_url_password(settings.redis.url)  # names appear in reports: never a password
        return WarmTarget([name], [client], [RawPipe(name, conn)], clients_to_close=[client])
    cluster = redis_cluster_client(settings)
    primaries = cluster.get_primaries()
    index = {node.name: i for i, node in enumerate(primaries)}
    owner = [0] * 16384
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        owner[slot] = index[nodes[0].name]
    pipes, infos = [], []
    for node in primaries:
        node_client = node.redis_connection
        pipes.append(RawPipe(node.name, node_client.connection_pool.get_connection()))
        infos.append(node_client)
    names = [node.name for node in primaries]
    return WarmTarget(names, infos, pipes, owner, clients_to_close=[cluster])


@dataclass
class WarmResult:
    keys_written: int = 0
    bytes_written: int = 0
    skipped: int = 0
    rows_read: int = 0
    stopped_by_budget: bool = False
    seconds: float = 0.0
    bytes_per_key: float = 0.0
    batches: int = 0
    budget_detail: str = ""
    memory_checks: int = 0  # INFO memory round trips the budget made


# How often the budget asks INFO memory (in batches); projected from bytes written in between.
INFO_EVERY_BATCHES = 25


class Budget:
    """Stop before used memory would pass `fraction` × maxmemory on any node.

    Bytes per key start from the payload (+ `overhead`), then come from what INFO says the keys written so
    far really cost. The projection counts keys still in flight, with `margin` to spare.

    INFO is asked only every `check_every` batches: Redis answers it after the SETs already queued, which
    stalls the pipeline. In between, used memory is projected from the last answer: every key in flight at
    that answer or sent since is counted at the per-key cost × `margin`, as if none of it were in the
    answer. That projection is never below the one INFO after every batch would give (as long as per-key
    cost × margin covers what a key really costs, which the per-batch check assumes for keys in flight too),
    and before the projection stops the run, INFO is asked again: the stop is decided on a fresh answer."""

    def __init__(
        self,
        start: list[NodeMemory],
        fraction: float,
        overhead: int = 96,
        margin: float = 1.25,
        check_every: int | None = None,
    ):
        self.start_used = [n.used_memory for n in start]
        self.limits = [int(n.limit * fraction) for n in start]
        self.names = [n.name for n in start]
        self.fraction = fraction
        self.overhead = overhead
        self.margin = margin
        self.check_every = max(1, INFO_EVERY_BATCHES if check_every is None else check_every)
        self.used: list[int] | None = None  # the last INFO answer, per node
        self.unmeasured = [0] * len(start)  # keys in flight at that answer or sent since, per node
        self.acked_at_check = 0  # keys acknowledged when INFO answered (pairs with `used` for the cost)
        self.since_check = 0  # batches sent since
        self.checks = 0  # INFO round trips so far

    def per_key(self, used: list[int], acked_keys: int, payload_per_key: float) -> float:
        estimate = payload_per_key + self.overhead
        if acked_keys >= 1000:
            measured = (sum(used) - sum(self.start_used)) / acked_keys
            if measured > 0:
                return max(measured, estimate * 0.5)
        return estimate

    def blocked(self, used: list[int], in_flight: list[int], new: list[int], per_key: float) -> str:
        """'' when the batch fits everywhere; otherwise which node it would push past its budget."""
        for i, limit in enumerate(self.limits):
            projected = used[i] + (in_flight[i] + new[i]) * per_key * self.margin
            if new[i] and projected > limit:
                return (
                    f"{self.names[i]}: used {used[i]} B + {in_flight[i] + new[i]} keys × {per_key:.0f} B "
                    f"would pass the budget {limit} B ({self.fraction:.0%} of its memory limit)"
                )
        return ""

    def due(self) -> bool:
        """Time to ask INFO again (never asked yet, or `check_every` batches since the last answer)."""
        return self.used is None or self.since_check >= self.check_every

    def measure(self, used: list[int], in_flight: list[int], acked_keys: int) -> None:
        """Record an INFO answer: `used` per node, with the keys in flight and acknowledged at that moment."""
        self.used = list(used)
        self.unmeasured = list(in_flight)
        self.acked_at_check = acked_keys
        self.since_check = 0
        self.checks += 1

    def check(self, new: list[int], payload_per_key: float) -> tuple[float, str]:
        """(bytes per key, '' or why the batch of `new` keys per node would pass the budget), projected
        from the last INFO answer (`measure` first)."""
        if self.used is None:
            raise RuntimeError("Budget.check before any measure")
        per_key = self.per_key(self.used, self.acked_at_check, payload_per_key)
        return per_key, self.blocked(self.used, self.unmeasured, new, per_key)

    def sent(self, new: list[int]) -> None:
        """The batch went out: its keys count in the projection until the next INFO answer."""
        self.unmeasured = [u + n for u, n in zip(self.unmeasured, new, strict=True)]
        self.since_check += 1


def warm_batches(
    batches: Iterable[list[tuple[bytes | None, bytes | None]]],
    target: WarmTarget,
    ttl: TtlPicker,
    budget: Budget | None,
    *,
    track: Callable[[list[bytes]], None] | None = None,
    progress: Callable[[WarmResult], None] | None = None,
    dry_run: bool = False,
) -> WarmResult:
    """Write every batch as pipelined `SET key value EX ttl` (grouped per node), stopping at the budget.

    `keys_written`/`bytes_written` count only keys Redis acknowledged with +OK; an exception (connection
    lost, refused write) leaves nothing to report, so the caller retries the whole warm or fails."""
    result = WarmResult()
    started = time.monotonic()
    payload_total = 0
    sent_keys = 0
    nodes = len(target.pipes)
    planned = [0] * nodes  # dry run: keys that would be in Redis by now, per node
    for rows in batches:
        result.rows_read += len(rows)
        good = [(k, v) for k, v in rows if k is not None and v is not None]
        result.skipped += len(rows) - len(good)
        if not good:
            continue
        if nodes == 1:
            data, keys, payload = set_commands(good, ttl.tails(len(good)))
            groups = {0: (data, keys, payload)}
        else:
            groups = _group(good, target.route([k for k, _ in good]), ttl)
            keys = [k for _, group_keys, _ in groups.values() for k in group_keys]
            payload = sum(p for _, _, p in groups.values())
        if budget is not None:
            new = [len(groups[i][1]) if i in groups else 0 for i in range(nodes)]
            payload_per_key = (payload_total + payload) / (sent_keys + len(keys))
            fresh = budget.due()
            if fresh:
                _measure(budget, target, planned, dry_run)
            per_key, reason = budget.check(new, payload_per_key)
            if reason and not fresh:  # the projection would stop here: decide on a fresh INFO answer
                _measure(budget, target, planned, dry_run)
                per_key, reason = budget.check(new, payload_per_key)
            result.bytes_per_key = per_key
            result.memory_checks = budget.checks
            if reason:
                result.stopped_by_budget = True
                result.budget_detail = reason
                result.rows_read -= len(rows)
                result.skipped -= len(rows) - len(good)
                break
        if budget is not None:
            budget.sent(new)
        payload_total += payload
        sent_keys += len(keys)
        result.batches += 1
        if dry_run:
            for i, (_, chunk_keys, _) in groups.items():
                planned[i] += len(chunk_keys)
        else:
            for i, (chunk, chunk_keys, chunk_payload) in groups.items():
                target.pipes[i].send(chunk, len(chunk_keys), chunk_payload)
            if track is not None:
                track(keys)
        if progress is not None and result.batches % 50 == 0:
            result.keys_written = sum(p.acked_keys for p in target.pipes)
            progress(result)
    for pipe in target.pipes:
        pipe.drain()
    result.keys_written = sum(p.acked_keys for p in target.pipes)
    result.bytes_written = sum(p.acked_bytes for p in target.pipes)
    if dry_run:
        result.keys_written, result.bytes_written = sent_keys, payload_total
    result.seconds = time.monotonic() - started
    return result


def _measure(budget: Budget, target: WarmTarget, planned: list[int], dry_run: bool) -> None:
    """Ask every node's INFO; keys in flight are read after the answer, so none of them is missed."""
    used = target.used_memory()
    in_flight = list(planned) if dry_run else [p.outstanding_keys for p in target.pipes]
    budget.measure(used, in_flight, sum(p.acked_keys for p in target.pipes))


def _group(
    good: list[tuple[bytes, bytes]], route: list[int], ttl: TtlPicker
) -> dict[int, tuple[bytes, list[bytes], int]]:
    """Cluster mode: one pipeline per node per batch (keys of the same node's slots together)."""
    per_node: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for row, node in zip(good, route, strict=True):
        per_node.setdefault(node, []).append(row)
    return {node: set_commands(node_rows, ttl.tails(len(node_rows))) for node, node_rows in per_node.items()}


# ------------------------------------------------------------------------------------------------ cache state
class WarmPlan(BaseModel):
    """Everything the warm, invalidation and state tasks need, resolved from settings and parameters."""

    name: str
    query: str
    columns: int
    serializer: str
    key_prefix: str
    ttl_seconds: int
    ttl_jitter: float
    limit: int | None
    memory_budget: float
    batch_size: int
    target: RedisTarget
    invalidate: bool
    dry_run: bool
    state_prefix: str

    @property
    def tag(self) -> str:
        """Hash tag: every state key of a warm set lives in one cluster slot."""
        return "{" + f"{self.state_prefix}:{self.name}" + "}"

    @property
    def state_key(self) -> str:
        return f"{self.tag}:state"

    @property
    def keys_key(self) -> str:
        """The set of keys the last completed run wrote (what 'vanished' is measured against)."""
        return f"{self.tag}:keys"

    @property
    def new_keys_key(self) -> str:
        return f"{self.tag}:keys:new"

    @property
    def tracks_keys(self) -> bool:
        return self.invalidate and self.columns == 3 and not self.dry_run


class CacheSnapshot(BaseModel):
    """What the warm set's Redis looked like before the run, and what the previous run left."""

    nodes: list[dict[str, Any]]
    previous: dict[str, str]
    hits: int
    misses: int
    evicted_keys: int
    used_memory: int
    memory_limit: int
    policies: list[str]


def hit_rate_since(previous: dict[str, str], hits: int, misses: int) -> tuple[float | None, str]:
    """keyspace hit rate between the previous run's counters and now; counters that went down mean a
    restart or CONFIG RESETSTAT, and then the rate is the one since that reset."""
    if "hits" not in previous or "misses" not in previous:
        return None, "first run: no previous counters"
    d_hits, d_misses = hits - int(previous["hits"]), misses - int(previous["misses"])
    note = f"since {previous.get('run_at', 'the previous run')}"
    if d_hits < 0 or d_misses < 0:
        d_hits, d_misses, note = hits, misses, "counters were reset (restart?) since the previous run"
    if d_hits + d_misses == 0:
        return None, f"{note}: no lookups"
    return d_hits / (d_hits + d_misses), note


def _state_client(settings: Settings, target: RedisTarget) -> Any:
    return redis_client(settings) if target == "standalone" else redis_cluster_client(settings)


def read_snapshot(settings: Settings, plan: WarmPlan) -> CacheSnapshot:
    target = open_info(settings, plan.target)
    client = _state_client(settings, plan.target)
    try:
        nodes = target.memory()
        raw = client.hgetall(plan.state_key)
    finally:
        target.close()
        client.close()
    previous = {k.decode(): v.decode() for k, v in raw.items()}
    return CacheSnapshot(
        nodes=[asdict(n) for n in nodes],
        previous=previous,
        hits=sum(n.keyspace_hits for n in nodes),
        misses=sum(n.keyspace_misses for n in nodes),
        evicted_keys=sum(n.evicted_keys for n in nodes),
        used_memory=sum(n.used_memory for n in nodes),
        memory_limit=sum(n.limit for n in nodes),
        policies=sorted({n.policy for n in nodes}),
    )


def open_info(settings: Settings, target: RedisTarget) -> WarmTarget:
    """INFO-only view of the target (no raw pipes)."""
    if target == "standalone":
        client = redis_client(settings)
        return WarmTarget([mask_url_password(settings.redis.url)], [client], clients_to_close=[client])
    cluster = redis_cluster_client(settings)
    primaries = cluster.get_primaries()
    return WarmTarget(
        [n.name for n in primaries], [n.redis_connection for n in primaries], clients_to_close=[cluster]
    )


def delete_keys(client: Any, keys: Sequence[bytes | str], chunk: int = 1000) -> int:
    """UNLINK in chunks (a cluster client splits them per slot); returns how many existed."""
    removed = 0
    for i in range(0, len(keys), chunk):
        part = list(keys[i : i + chunk])
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.unlink(key)
        removed += sum(int(r) for r in pipe.execute())
    return removed


def invalidate_changed(
    client: Any, key_batches: Iterable[tuple[list[str], Any]], prefix: str, dry_run: bool
) -> tuple[int, int, Any]:
    """Delete the cache keys of rows changed since the watermark: (rows changed, keys removed, newest
    updated_at seen). Runs before the warm, so changed hot rows are written back fresh right after."""
    changed = removed = 0
    newest = None
    for keys, batch_newest in key_batches:
        changed += len(keys)
        if batch_newest is not None and (newest is None or batch_newest > newest):
            newest = batch_newest
        if not dry_run:
            removed += delete_keys(client, [prefix + k for k in keys])
    return changed, removed, newest


def invalidate_vanished(
    client: Any, plan: WarmPlan, present: Callable[[list[str]], set[str]], chunk: int = 1000
) -> tuple[int, int]:
    """Keys the previous run wrote that this run did not, whose rows the query no longer returns: delete
    them. Returns (rows vanished, keys removed). Then this run's key set becomes the one to compare with."""
    vanished = removed = 0
    prefix = plan.key_prefix.encode()
    batch: list[bytes] = []

    def flush(keys: list[bytes]) -> None:
        nonlocal vanished, removed
        rewritten = client.smismember(plan.new_keys_key, keys)
        stale = [k for k, again in zip(keys, rewritten, strict=True) if not again]
        if not stale:
            return
        source = {k[len(prefix) :].decode(errors="replace"): k for k in stale}
        still = present(list(source))
        gone = [key for row_key, key in source.items() if row_key not in still]
        vanished += len(gone)
        if gone:
            removed += delete_keys(client, gone)
        # rows still there whose keys are still cached (not rewritten this time, e.g. a smaller limit or a
        # budget stop): keep tracking them, so their rows vanishing later is still noticed
        kept = [key for row_key, key in source.items() if row_key in still]
        if kept:
            pipe = client.pipeline(transaction=False)
            for key in kept:
                pipe.exists(key)
            cached = [key for key, n in zip(kept, pipe.execute(), strict=True) if n]
            if cached:
                client.sadd(plan.new_keys_key, *cached)

    for key in client.sscan_iter(plan.keys_key, count=chunk):
        batch.append(key)
        if len(batch) >= chunk:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return vanished, removed


# ------------------------------------------------------------------------------------------------ cache tasks
@io_task(task_run_name="redis-cache-snapshot-{plan.name}")
def cache_snapshot(settings: Settings, plan: WarmPlan) -> CacheSnapshot:
    return read_snapshot(settings, plan)


@io_task(task_run_name="redis-invalidate-changed-{plan.name}")
def invalidate_changed_rows(settings: Settings, plan: WarmPlan, since: datetime) -> dict[str, Any]:
    from scaleops.core.clients import postgres_connect
    from tasks.cache.source import changed_key_batches

    client = _state_client(settings, plan.target)
    try:
        with postgres_connect(settings) as conn:
            batches = changed_key_batches(conn, plan.query, since, plan.batch_size)
            changed, removed, newest = invalidate_changed(client, batches, plan.key_prefix, plan.dry_run)
    finally:
        client.close()
    return {"changed": changed, "removed": removed, "newest": newest}


@io_task(task_run_name="redis-warm-{plan.name}-{plan.target}")
def warm_keys(settings: Settings, plan: WarmPlan) -> WarmResult:
    """Stream the warm set from PostgreSQL into Redis. A retry (Redis restarted, topology changed) warms
    again from the first row: SETs are idempotent and the counts start over, so the report never lies."""
    from prefect import get_run_logger

    from scaleops.core.clients import postgres_connect
    from tasks.cache.source import prefetched, stream_batches, warm_rows_sql

    log = get_run_logger()
    target = open_target(settings, plan.target)
    state = _state_client(settings, plan.target)
    try:
        budget = Budget(target.memory(), plan.memory_budget)
        track = None
        if plan.tracks_keys:
            state.delete(plan.new_keys_key)

            def track(keys: list[bytes]) -> None:
                state.sadd(plan.new_keys_key, *keys)

        def progress(r: WarmResult) -> None:
            log.info("%s: %d rows read, %d keys acknowledged", plan.name, r.rows_read, r.keys_written)

        sql = warm_rows_sql(plan.query, plan.columns, plan.serializer, plan.limit)
        with postgres_connect(settings) as conn:
            batches = prefetched(stream_batches(conn, sql, {"prefix": plan.key_prefix}, plan.batch_size))
            try:
                result = warm_batches(
                    batches,
                    target,
                    TtlPicker(plan.ttl_seconds, plan.ttl_jitter),
                    budget,
                    track=track,
                    progress=progress,
                    dry_run=plan.dry_run,
                )
            finally:
                batches.close()  # a budget stop or an error: end the reader thread before the connection
    finally:
        target.close()
        state.close()
    log.info(
        "%s: %d keys %s in %.1f s%s",
        plan.name,
        result.keys_written,
        "would be written" if plan.dry_run else "written",
        result.seconds,
        " (stopped by the memory budget)" if result.stopped_by_budget else "",
    )
    return result


@io_task(task_run_name="redis-invalidate-vanished-{plan.name}")
def invalidate_vanished_rows(settings: Settings, plan: WarmPlan) -> dict[str, int]:
    from scaleops.core.clients import postgres_connect
    from tasks.cache.source import present_keys

    client = _state_client(settings, plan.target)
    try:
        with postgres_connect(settings) as conn:
            vanished, removed = invalidate_vanished(
                client, plan, lambda keys: present_keys(conn, plan.query, plan.columns, keys)
            )
        if client.exists(plan.new_keys_key):
            client.rename(plan.new_keys_key, plan.keys_key)
        else:  # this run wrote nothing: nothing of it to compare with next time
            client.delete(plan.keys_key)
    finally:
        client.close()
    return {"vanished": vanished, "removed": removed}


@io_task(task_run_name="redis-save-cache-state-{plan.name}")
def save_cache_state(settings: Settings, plan: WarmPlan, values: dict[str, str]) -> None:
    client = _state_client(settings, plan.target)
    try:
        client.hset(plan.state_key, mapping=values)
    finally:
        client.close()
