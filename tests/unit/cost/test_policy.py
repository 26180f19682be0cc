"""Policies are data: the shipped file loads, and every malformed policy is refused at load, naming
the policy and the field, before any API call."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tasks.cost.policy import PolicyError, load_policies, parse_duration, parse_policies

ROOT = Path(__file__).resolve().parents[3]


def one(**overrides: Any) -> dict[str, Any]:
    policy = {
        "name": "p",
        "resource": "aws.ebs-volume",
        "filters": [{"unattached": True}],
        "action": "delete",
    }
    policy.update(overrides)
    return {"policies": [policy]}


def refused(data: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policies(data)
    return "; ".join(caught.value.problems)


def test_the_shipped_policies_load() -> None:
    policies = load_policies(ROOT / "deployments/cost-policies.yml")
    assert {p.resource for p in policies} >= {
        "aws.ebs-volume",
        "aws.ebs-snapshot",
        "aws.eip",
        "aws.ec2-instance",
        "aws.ami",
        "aws.elbv2",
        "aws.s3-multipart",
        "k8s.job",
        "k8s.pod",
        "k8s.pvc",
        "k8s.pv",
        "k8s.namespace",
    }
    assert all(p.grace >= timedelta(0) for p in policies)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0d", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("6h", timedelta(hours=6)),
        ("2w", timedelta(days=14)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "7 days", "-1d", "1y", "d", True, None, 1.5])
def test_malformed_durations_are_refused(text: Any) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"resource": "aws.ebs"}, "policy 'p', field resource: unknown resource 'aws.ebs'"),
        ({"action": "nuke"}, "policy 'p', field action: unknown action 'nuke' for aws.ebs-volume"),
        ({"grace": "a week"}, "policy 'p', field grace: not a duration"),
        ({"filters": [{"colour": "red"}]}, "policy 'p', field filters[0]: unknown filter 'colour'"),
        ({"filters": [{"unattached": True}, {"age": "old"}]}, "policy 'p', field filters[1]: not a duration"),
        ({"filters": [{"expired": True}]}, "field filters[0]: unknown filter 'expired' for aws.ebs-volume"),
        ({"filters": []}, "policy 'p', field filters: expected a non-empty list"),
        ({"filters": [{"age": "1d", "state": "x"}]}, "field filters[0]: a filter is a mapping with one key"),
        ({"filters": [{"unattached": "yes"}]}, "field filters[0]: unattached: expected `unattached: true`"),
        ({"filters": [{"tag": "team"}]}, "field filters[0]: tag/label: expected {key: K}"),
        ({"snapshot": "no"}, "policy 'p', field snapshot: expected true or false"),
        ({"max_actions": -1}, "policy 'p', field max_actions"),
        ({"colour": "red"}, "policy 'p', field colour: unknown field"),
        ({"name": "Bad Name"}, "field name: expected lowercase letters"),
    ],
)
def test_malformed_policies_are_refused_naming_policy_and_field(
    overrides: dict[str, Any], names: str
) -> None:
    assert names in refused(one(**overrides))


def test_an_unmarkable_resource_needs_a_zero_grace() -> None:
    data = one(resource="aws.s3-multipart", action="abort", filters=[{"age": "7d"}], grace="1d")
    assert "policy 'p', field grace: aws.s3-multipart cannot carry a mark" in refused(data)


def test_repeated_names_and_every_fault_are_reported_at_once() -> None:
    data = {"policies": [one()["policies"][0], one()["policies"][0], {"name": "q", "resource": "x"}]}
    message = refused(data)
    assert "policy 'p', field name: repeated" in message
    assert "policy 'q', field resource" in message


def test_labels_are_tags_and_tag_filters_parse() -> None:
    (policy,) = parse_policies(
        one(
            resource="k8s.job",
            filters=[{"label": {"key": "team", "value": "web"}}, {"tag": {"key": "keep", "absent": True}}],
        )
    )
    assert [(f.kind, f.key, f.value, f.absent) for f in policy.filters] == [
        ("tag", "team", "web", False),
        ("tag", "keep", None, True),
    ]


def test_a_file_that_is_not_yaml_or_missing_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("policies: [\n")
    with pytest.raises(PolicyError, match="not YAML"):
        load_policies(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "missing.yml")
    bad.write_text("- a\n")
    with pytest.raises(PolicyError, match="`policies:` list"):
        load_policies(bad)
