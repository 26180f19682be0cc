"""Policies are data: a YAML file lists policies (`name`, `resource`, `filters`, `action`, `grace`).

`load_policies(path)` reads and validates the whole file before any API call: an unknown resource,
filter or action, a malformed duration or a repeated name is refused with the policy's name and the
field (`PolicyError`, exit 2 on the command line).

    policies:
      - name: ebs-unattached
        resource: aws.ebs-volume
        filters:
          - unattached: true
          - age: 7d
        action: delete
        grace: 7d
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tasks.cost.catalog import RESOURCES
from tasks.cost.resources import FilterSpec

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
POLICY_KEYS = {"name", "resource", "filters", "action", "grace", "snapshot", "max_actions", "description"}


class PolicyError(ValueError):
    """The policy file is malformed; `problems` holds one 'policy NAME, field F: message' per fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def parse_duration(text: Any) -> timedelta:
    """'0d', '30s', '5m', '6h', '7d', '2w' -> timedelta (zero allowed, negative or junk refused)."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 6h, 7d, 2w)")
    if isinstance(text, int):
        text = f"{text}s"
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 6h, 7d, 2w)")
    return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2).lower()])


@dataclass(frozen=True)
class Filter:
    """One parsed filter: `kind` (age, state_age, state, tag, unattached, unreferenced, expired,
    metric_below)."""

    kind: str
    duration: timedelta | None = None  # age, state_age; metric_below: the window
    states: tuple[str, ...] = ()  # state
    key: str | None = None  # tag / label; metric_below: the metric name
    value: str | None = None
    absent: bool = False
    threshold: float | None = None  # metric_below
    stat: str = "Maximum"  # metric_below: the daily statistic compared with the threshold
    missing: str = "skip"  # metric_below without datapoints: skip (no data, no action) or match


@dataclass(frozen=True)
class Policy:
    name: str
    resource: str
    action: str
    grace: timedelta
    filters: tuple[Filter, ...] = ()
    snapshot: bool = True  # EBS volumes are snapshotted before deletion unless this is false
    max_actions: int | None = None  # per-policy cap (the run's cap applies too)
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def provider(self) -> str:
        return RESOURCES[self.resource].provider


METRIC_KEYS = {"metric", "threshold", "days", "stat", "missing"}
STATS = ("Average", "Maximum", "Minimum", "Sum", "SampleCount")


def _metric_filter(arg: Any) -> Filter:
    """`metric_below: {metric: CPUUtilization, threshold: 2, days: 14d, stat: Maximum, missing: skip}`."""
    if not isinstance(arg, dict) or not isinstance(arg.get("metric"), str) or "threshold" not in arg:
        raise ValueError("metric_below: expected {metric: NAME, threshold: N, days: 14d}")
    unknown = set(arg) - METRIC_KEYS
    if unknown:
        raise ValueError(f"metric_below: unknown key(s) {', '.join(sorted(unknown))}")
    threshold = arg["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError("metric_below: threshold must be a number")
    window = parse_duration(arg.get("days", "14d"))
    if window < timedelta(days=1):
        raise ValueError("metric_below: days must be at least 1d (daily datapoints)")
    stat = arg.get("stat", "Maximum")
    if stat not in STATS:
        raise ValueError(f"metric_below: stat must be one of {', '.join(STATS)}")
    missing = arg.get("missing", "skip")
    if missing not in ("skip", "match"):
        raise ValueError("metric_below: missing must be skip (no data, no action) or match")
    return Filter(
        "metric_below",
        duration=window,
        key=arg["metric"],
        threshold=float(threshold),
        stat=stat,
        missing=missing,
    )


def _parse_filter(resource: str, index: int, raw: Any, where: str) -> Filter:
    spec: dict[str, FilterSpec] = RESOURCES[resource].filters
    at = f"{where}, field filters[{index}]"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(f"{at}: a filter is a mapping with one key, e.g. `age: 7d`")
    ((kind, arg),) = raw.items()
    kind = "tag" if kind == "label" else kind
    if kind not in spec:
        raise ValueError(f"{at}: unknown filter {kind!r} for {resource} (known: {', '.join(sorted(spec))})")
    try:
        if kind in ("age", "state_age"):
            return Filter(kind, duration=parse_duration(arg))
        if kind == "metric_below":
            return _metric_filter(arg)
        if kind == "state":
            states = (arg,) if isinstance(arg, str) else tuple(arg) if isinstance(arg, list) else ()
            if not states or not all(isinstance(s, str) and s for s in states):
                raise ValueError("state: expected a state or a list of states")
            return Filter(kind, states=states)
        if kind == "tag":
            if not isinstance(arg, dict) or not isinstance(arg.get("key"), str) or not arg["key"]:
                raise ValueError(
                    "tag/label: expected {key: K} with `value: V`, `present: true` or `absent: true`"
                )
            unknown = set(arg) - {"key", "value", "present", "absent"}
            if unknown:
                raise ValueError(f"tag/label: unknown key(s) {', '.join(sorted(unknown))}")
            value = arg.get("value")
            return Filter(
                kind,
                key=arg["key"],
                value=None if value is None else str(value),
                absent=bool(arg.get("absent", False)),
            )
        if arg is not True:  # unattached, unreferenced, expired
            raise ValueError(f"{kind}: expected `{kind}: true`")
        return Filter(kind)
    except ValueError as exc:
        raise ValueError(f"{at}: {exc}") from None


def parse_policy(raw: Any, index: int) -> Policy:
    """One policy from its mapping; ValueError names the policy and the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"policies[{index}]: a policy is a mapping")
    name = raw.get("name")
    where = f"policy {name!r}" if isinstance(name, str) and name else f"policies[{index}]"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}, field name: expected lowercase letters, digits and '-'")
    unknown = sorted(set(raw) - POLICY_KEYS)
    if unknown:
        raise ValueError(
            f"{where}, field {unknown[0]}: unknown field (known: {', '.join(sorted(POLICY_KEYS))})"
        )
    resource = raw.get("resource")
    if resource not in RESOURCES:
        raise ValueError(
            f"{where}, field resource: unknown resource {resource!r} (known: {', '.join(sorted(RESOURCES))})"
        )
    kind = RESOURCES[resource]
    action = raw.get("action")
    if action not in kind.actions:
        raise ValueError(
            f"{where}, field action: unknown action {action!r} for {resource} "
            f"(known: {', '.join(kind.actions)})"
        )
    try:
        grace = parse_duration(raw.get("grace", "0d"))
    except ValueError as exc:
        raise ValueError(f"{where}, field grace: {exc}") from None
    if grace and not kind.markable:
        raise ValueError(
            f"{where}, field grace: {resource} cannot carry a mark, so its grace must be 0d "
            "(use an age filter instead)"
        )
    filters_raw = raw.get("filters", [])
    if not isinstance(filters_raw, list) or not filters_raw:
        raise ValueError(
            f"{where}, field filters: expected a non-empty list (a policy without filters "
            "would match everything)"
        )
    filters = tuple(_parse_filter(resource, i, f, where) for i, f in enumerate(filters_raw))
    snapshot = raw.get("snapshot", True)
    if not isinstance(snapshot, bool):
        raise ValueError(f"{where}, field snapshot: expected true or false")
    cap = raw.get("max_actions")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise ValueError(f"{where}, field max_actions: expected a whole number >= 0")
    return Policy(name, resource, action, grace, filters, snapshot, cap, str(raw.get("description", "")), raw)


def parse_policies(data: Any) -> list[Policy]:
    """Every policy of a parsed file, or PolicyError listing every fault."""
    items = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PolicyError(["the file must be a mapping with a `policies:` list"])
    problems: list[str] = []
    policies: list[Policy] = []
    for index, raw in enumerate(items):
        try:
            policies.append(parse_policy(raw, index))
        except ValueError as exc:
            problems.append(str(exc))
    names = [p.name for p in policies]
    problems += [
        f"policy {n!r}, field name: repeated" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    if problems:
        raise PolicyError(problems)
    return policies


def load_policies(path: Path | str) -> list[Policy]:
    """Read and validate a policy file (YAML or JSON); PolicyError names each bad policy and field."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{path}: not YAML: {str(exc).splitlines()[0]}"]) from None
    return parse_policies(data)
