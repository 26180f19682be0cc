"""The lifecycle on an in-memory resource: found -> marked -> not acted inside the grace -> acted after
it; unmarked when back in use; protections; the action cap; races between filter and action; the
dry run changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasks.cost.lifecycle import classify, run_policy
from tasks.cost.policy import parse_policies
from tasks.cost.resources import MARK_KEY, PROTECT_KEY, Item
from tests.unit.cost.fakes import FakeVolumes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = parse_policies(
    {
        "policies": [
            {
                "name": "ebs-unattached",
                "resource": "aws.ebs-volume",
                "filters": [{"unattached": True}, {"age": "7d"}],
                "action": "delete",
                "grace": "7d",
            }
        ]
    }
)[0]


def volume(vid: str, *, attached: bool = False, created: datetime = T0, **labels: str) -> Item:
    return Item(
        id=vid, where="test-1", created=created, attached=attached, labels=dict(labels), monthly_usd=8.0
    )


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def run(resource: FakeVolumes, at: datetime, *, dry_run: bool = False, remaining: int = 50, **kw: object):  # noqa: ANN201
    return run_policy(resource, POLICY, at, dry_run=dry_run, remaining=remaining, **kw)  # type: ignore[arg-type]


def states(result) -> dict[str, str]:  # noqa: ANN001
    return {f.id: f.state for f in result.findings}


def test_found_marked_not_acted_in_grace_then_acted() -> None:
    vols = FakeVolumes(
        [volume("vol-old"), volume("vol-young", created=day(5)), volume("vol-used", attached=True)]
    )
    assert states(run(vols, day(3))) == {}  # younger than 7 days: no finding
    first = run(vols, day(8))
    assert states(first) == {"vol-old": "marked"}
    assert vols.items["vol-old"].labels[MARK_KEY] == "delete@2026-01-16"
    assert [(r.action, r.resource_id) for r in first.audit] == [("mark", "vol-old")]
    assert states(run(vols, day(14))) == {"vol-old": "marked", "vol-young": "marked"}  # inside the grace
    assert "vol-old" in vols.items
    done = run(vols, day(15))
    assert states(done)["vol-old"] == "acted" and "vol-old" not in vols.items
    assert done.stats.acted == 1 and done.audit[-1].action == "delete"
    assert states(done)["vol-young"] == "marked"  # its own grace runs to day 18


def test_back_in_use_is_unmarked_and_never_acted() -> None:
    vols = FakeVolumes([volume("vol-1")])
    run(vols, day(8))
    vols.items["vol-1"].attached = True
    result = run(vols, day(30))
    assert states(result) == {"vol-1": "back-in-use"}
    assert MARK_KEY not in vols.items["vol-1"].labels
    assert result.stats.unmarked == 1 and result.stats.acted == 0
    assert [r.action for r in result.audit] == ["unmark"]


def test_a_mark_for_another_action_or_garbled_is_not_ours() -> None:
    item = volume("vol-1", **{MARK_KEY: "snapshot@2026-01-02"})
    assert classify(POLICY, item, day(30), ()) == "would-mark"
    item.labels[MARK_KEY] = "delete@someday"
    assert classify(POLICY, item, day(30), ()) == "would-mark"
    item.attached = True
    item.labels[MARK_KEY] = "snapshot@2026-01-02"
    assert classify(POLICY, item, day(30), ()) is None


def test_protected_resources_are_never_touched() -> None:
    vols = FakeVolumes([volume("vol-keep", **{PROTECT_KEY: "true"}), volume("vol-marked-keep")])
    run(vols, day(8))
    vols.items["vol-marked-keep"].labels[PROTECT_KEY] = "true"  # protected after it was marked
    before = vols.snapshot()
    result = run(vols, day(30))
    assert states(result) == {"vol-keep": "protected", "vol-marked-keep": "protected"}
    assert vols.snapshot() == before
    assert result.stats.skipped_protected == 2
    assert {r.action for r in result.audit} == {"skip-protected"}


def test_protected_namespaces() -> None:
    item = volume("kube-system/job-1")
    item.namespace = "kube-system"
    assert classify(POLICY, item, day(30), ["kube-system"]) == "protected"
    assert classify(POLICY, item, day(30), ["other"]) == "would-mark"


def test_the_cap_stops_acting_and_reports_the_rest() -> None:
    vols = FakeVolumes([volume(f"vol-{i}") for i in range(5)])
    run(vols, day(8))
    result = run(vols, day(20), remaining=2)
    assert result.stats.acted == 2 and result.capped == 3 and result.stats.due == 3
    assert sorted(states(result).values()) == ["acted", "acted", "due", "due", "due"]
    assert len(vols.items) == 3
    assert run(vols, day(20), remaining=0).stats.acted == 0


@pytest.mark.parametrize("race", ["vanish", "attach", "changed"])
def test_a_resource_that_changed_between_filter_and_action_is_skipped(race: str) -> None:
    vols = FakeVolumes([volume("vol-race"), volume("vol-ok")])
    run(vols, day(8))
    vols.before_act["vol-race"] = race
    result = run(vols, day(20))
    assert states(result) == {"vol-race": "changed", "vol-ok": "acted"}
    assert result.stats.skipped_changed == 1 and not result.errors
    assert ("skip-changed", "vol-race") in [(r.action, r.resource_id) for r in result.audit]


def test_an_error_on_one_resource_does_not_stop_the_others() -> None:
    vols = FakeVolumes([volume("vol-bad"), volume("vol-ok")])
    run(vols, day(8))
    vols.before_act["vol-bad"] = "boom"
    result = run(vols, day(20))
    assert states(result) == {"vol-bad": "error", "vol-ok": "acted"}
    assert result.stats.errors == 1 and "throttled" in result.errors[0]


def test_the_dry_run_changes_nothing() -> None:
    vols = FakeVolumes([volume("vol-new"), volume("vol-due"), volume("vol-back")])
    run(vols, day(8))
    vols.items["vol-back"].attached = True
    vols.items["vol-new"].labels.pop(MARK_KEY)
    before = vols.snapshot()
    vols.calls.clear()
    result = run(vols, day(20), dry_run=True)
    assert states(result) == {"vol-new": "would-mark", "vol-due": "due", "vol-back": "back-in-use"}
    assert vols.snapshot() == before and vols.calls == ["find"] and not result.audit
    assert result.stats.due == 1


def test_ages_are_measured_to_as_of() -> None:
    vols = FakeVolumes([volume("vol-1")])
    (finding,) = run(vols, day(10), dry_run=True).findings
    assert finding.age_days == 10.0 and finding.monthly_usd == 8.0


def test_audit_rows_are_recorded_as_they_happen_and_a_failing_record_stops_acting() -> None:
    vols = FakeVolumes([volume("vol-a"), volume("vol-b")])
    batches: list[list[str]] = []
    run_policy(
        vols,
        POLICY,
        day(8),
        dry_run=False,
        remaining=10,
        record=lambda rows: batches.append([r.action for r in rows]),
    )
    assert batches == [["mark", "mark"]]
    batches.clear()
    run_policy(
        vols,
        POLICY,
        day(20),
        dry_run=False,
        remaining=10,
        record=lambda rows: batches.append([r.action for r in rows]),
    )
    assert batches == [["delete"], ["delete"]]  # one write per action, right after it

    vols = FakeVolumes([volume("vol-c"), volume("vol-d")])
    run(vols, day(8))

    def broken(rows: object) -> None:
        raise ConnectionError("audit database gone")

    with pytest.raises(ConnectionError):
        run_policy(vols, POLICY, day(20), dry_run=False, remaining=10, record=broken)
    assert len(vols.items) == 1  # the first action happened, its row failed, nothing more was done


def test_a_resource_that_vanished_before_its_mark_is_skipped_not_marked() -> None:
    vols = FakeVolumes([volume("vol-gone"), volume("vol-ok")])
    vols.before_act["vol-gone"] = "vanish-before-mark"
    result = run(vols, day(8))
    assert states(result) == {"vol-gone": "changed", "vol-ok": "marked"}
    assert result.stats.marked == 1 and result.stats.skipped_changed == 1
    assert [(r.action, r.resource_id) for r in result.audit] == [
        ("skip-changed", "vol-gone"),
        ("mark", "vol-ok"),
    ]


def test_a_tag_batch_refused_for_a_vanished_resource_is_retried_one_by_one() -> None:
    from botocore.exceptions import ClientError

    from tasks.cost.aws import AwsResource, AwsScope
    from tasks.cost.prices import load_prices

    calls: list[list[str]] = []

    def create_tags(ids: list[str]) -> None:
        calls.append(ids)
        if "vol-gone" in ids:
            raise ClientError({"Error": {"Code": "InvalidVolume.NotFound", "Message": "gone"}}, "CreateTags")

    resource = AwsResource(AwsScope("test-1"), load_prices())
    items = [volume("vol-a"), volume("vol-gone"), volume("vol-b")]
    assert resource.tag_batches(items, create_tags) == {"vol-gone"}
    assert calls == [["vol-a", "vol-gone", "vol-b"], ["vol-a"], ["vol-gone"], ["vol-b"]]

    def throttled(ids: list[str]) -> None:
        raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "CreateTags")

    with pytest.raises(ClientError):  # anything but a vanished resource is an error (the retry policy's)
        resource.tag_batches(items, throttled)


def test_shared_listings_load_once_and_a_failed_load_is_asked_again() -> None:
    from tasks.cost.aws import Listings

    listings, calls = Listings(), []

    def load() -> list[dict[str, Any]]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("reset")
        return [{"VolumeId": "vol-1"}]

    with pytest.raises(ConnectionError):
        listings.get(("describe_volumes", "Volumes"), load)
    assert listings.get(("describe_volumes", "Volumes"), load) == [{"VolumeId": "vol-1"}]
    assert listings.get(("describe_volumes", "Volumes"), load) == [{"VolumeId": "vol-1"}]
    assert len(calls) == 2
