"""Regional partitions, with real network namespaces (issue 7): the whole service runs in the
partition lab (:mod:`partition_lab`: per region a PostgreSQL node, an etcd member, an
orchestrator and a node agent, each region in its own namespace; a sampler in an observer
namespace that records every ~100 ms per node whether it answers, whether it is in recovery
and whether a write commits).

* The primary's region cut off for less than ``agent.fence_after``: no failover, the primary
  stays in us-east, nothing is fenced.
* Cut off for longer: exactly one new primary outside us-east; its agent fenced the old one
  (``SELF_FENCED``) before the promotion started; never two writable primaries in the samples;
  after the heal the old primary comes back only as a replica.
* A replica's region (eu, with its orchestrator and etcd member) cut off: no failover, at most
  one leadership change.
* The leader orchestrator SIGKILLed: another leads within the lease ttl (plus one campaign
  retry and etcd's lease-expiry check).
* One etcd member SIGKILLed: no failover, leadership keeps working.

One lab serves the module; a test that finds it not at rest (or with the primary elsewhere
than it needs) builds a new one. Every failing assertion prints the samples of the test's
window and the tails of every log.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from netlab import lab_unavailable
from partition_lab import (
    FENCE_AFTER,
    INSTANCE,
    NODE,
    REGIONS,
    TTL,
    Lab,
    partition_lab,
    wait_for,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.etcd, pytest.mark.netns, pytest.mark.timeout(240)]

SHORT_PARTITION = FENCE_AFTER / 2
"""Well below the agent's fence_after."""
CAMPAIGN_RETRY = min(1.0, TTL / 6)
"""A follower campaigns this often (orchestrator.lease.LeaseTiming.retry_interval)."""
LEASE_CHECK = 0.5
"""etcd revokes expired leases on a 500 ms tick."""
LEADER_CHANGE_BOUND = TTL + CAMPAIGN_RETRY + LEASE_CHECK
FENCE_REASONS = {"SELF_FENCED", "FENCE_REQUESTED", "SUPERSEDED", "STALE_PRIMARY"}
"""The agent's log reasons of a fence it carried out."""


# --- the module's lab ------------------------------------------------------------------------


@dataclass
class Holder:
    stack: contextlib.ExitStack
    lab: Lab | None = None

    def get(self, primary: str | None = None) -> Lab:
        """A lab at rest (with ``primary`` the primary, if given); a new one if the current
        one does not get there within 20 s."""
        if self.lab is not None:
            try:
                self.lab.wait_baseline(timeout=20)
                if primary is None or self.lab.baseline(primary) is None:
                    return self.lab
                print(f"the primary is not {primary}; building a new lab")
            except AssertionError as exc:
                print(f"the lab is not at rest; building a new one: {str(exc)[:2000]}")
            self.stack.close()
            self.lab = None
        self.stack = contextlib.ExitStack()
        self.lab = self.stack.enter_context(partition_lab())
        return self.lab


@pytest.fixture(scope="module")
def labs() -> Iterator[Holder]:
    why = lab_unavailable()
    if why == "network namespaces need root":
        pytest.skip(why)
    if why:
        pytest.fail(why)
    holder = Holder(contextlib.ExitStack())

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # A SIGTERM to the test run tears the lab down like Ctrl-C (its default would leave the
    # namespaces and every process in them behind).
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield holder
    finally:
        try:
            holder.stack.close()
        finally:
            signal.signal(signal.SIGTERM, previous)


# --- what the samples say --------------------------------------------------------------------


def writable_spans(lab: Lab, since: float, until: float) -> dict[str, list[tuple[float, float]]]:
    """Per node, the spans in which it took writes: consecutive committed probe writes (no
    failed attempt between them), from the first one's start to the last one's end."""
    spans: dict[str, list[tuple[float, float]]] = {NODE[r]: [] for r in REGIONS}
    for node, found in spans.items():
        current: tuple[float, float] | None = None
        for rec in sorted(
            (r for r in lab.samples.of("db", since, until) if r["node"] == node),
            key=lambda r: r["t0"],
        ):
            if rec.get("write"):
                current = (current[0], rec["t1"]) if current else (rec["t0"], rec["t1"])
            elif current is not None:
                found.append(current)
                current = None
        if current is not None:
            found.append(current)
    return spans


def overlaps(spans: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Pairs of spans of different nodes that overlap in time: two writable primaries."""
    found = []
    nodes = sorted(spans)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            for sa in spans[a]:
                for sb in spans[b]:
                    if sa[0] < sb[1] and sb[0] < sa[1]:
                        found.append(f"{a} {sa} and {b} {sb}")
    return found


def writers(lab: Lab, since: float, until: float) -> set[str]:
    return {r["node"] for r in lab.samples.of("db", since, until) if r.get("write")}


def fences(lab: Lab, region: str, since: float) -> list[dict[str, Any]]:
    agent = lab.agents[region]
    return [e for reason in FENCE_REASONS for e in lab.log_events(agent, reason, since)]


def leader_elections(lab: Lab, since: float) -> list[tuple[float, str]]:
    return sorted(
        (e["t"], INSTANCE[r])
        for r in REGIONS
        for e in lab.log_events(lab.orch[r], "LEADER_ELECTED", since)
    )


class Check:
    """Assertions that print the window's samples and the log tails when they fail."""

    def __init__(self, lab: Lab, since: float) -> None:
        self.lab, self.since = lab, since

    def __call__(self, ok: object, message: str) -> None:
        if not ok:
            raise AssertionError(f"{message}\n{self.lab.diagnostics(self.since - 2)}")


def observe(seconds: float) -> None:
    time.sleep(seconds)


# --- the tests -------------------------------------------------------------------------------


def test_a_partition_shorter_than_fence_after_changes_nothing(labs: Holder) -> None:
    lab = labs.get(primary=NODE["us-east"])
    t0 = time.time()
    check = Check(lab, t0)
    lab.net.isolate("us-east")
    time.sleep(SHORT_PARTITION)
    lab.net.heal("us-east")
    t_heal = time.time()
    # Long enough for any late reaction: a leader elected after the heal, a fence request.
    observe(FENCE_AFTER + TTL + 2)
    t1 = time.time()

    failovers = lab.failovers(since=t0)
    check(not failovers, f"a {SHORT_PARTITION:g}s partition caused failovers: {failovers}")
    fenced = {r: fences(lab, r, t0) for r in REGIONS}
    check(not any(fenced.values()), f"an agent fenced its node: {fenced}")
    check(
        writers(lab, t0, t1) == {NODE["us-east"]},
        f"nodes that took writes during and after the partition: {writers(lab, t0, t1)}",
    )
    check(
        NODE["us-east"] in writers(lab, t_heal, t1),
        "us-east took no write after the heal",
    )
    check(not lab.agent_record("us-east").get("fenced"), "us-east's agent record says fenced")
    lab.wait_baseline(timeout=20, primary=NODE["us-east"])


def test_isolating_a_replica_region_fails_nothing_over(labs: Holder) -> None:
    lab = labs.get()
    primary = next(n for n, role in lab.roles().items() if role == "primary")
    assert primary != NODE["eu"]
    t0 = time.time()
    check = Check(lab, t0)
    lab.net.isolate("eu")
    time.sleep(FENCE_AFTER + 3)  # past the eu agent's fence_after: it has no primary to fence
    lab.net.heal("eu")
    observe(4)
    t1 = time.time()

    check(not lab.failovers(since=t0), f"failovers: {lab.failovers(since=t0)}")
    check(writers(lab, t0, t1) == {primary}, f"writers: {writers(lab, t0, t1)}")
    fenced = {r: fences(lab, r, t0) for r in REGIONS}
    check(not any(fenced.values()), f"an agent fenced its node: {fenced}")
    elections = leader_elections(lab, t0)
    check(len(elections) <= 1, f"leadership flapped: {elections}")
    lab.wait_baseline(timeout=30, primary=primary)


def leaderless_gaps(lab: Lab, since: float, until: float) -> float:
    """The longest time between two samples that showed a leader (any instance)."""
    times = [since] + [r["t"] for r in lab.samples.of("orch", since, until) if r.get("leader")]
    times.append(until)
    return max(b - a for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("which", ["follower", "raft-leader"])
def test_killing_one_etcd_member_changes_nothing(labs: Holder, which: str) -> None:
    """A follower member: nothing changes at all. The raft leader: etcd elects another within
    about its election timeout; the orchestrator leader may lose one renewal to it and win
    again (at most one change), never a gap longer than a leader change."""
    lab = labs.get()
    primary = next(n for n, role in lab.roles().items() if role == "primary")
    raft_leader = lab.etcd_leader()
    followers = [r for r in REGIONS if r != raft_leader]
    own = next(r for r in REGIONS if NODE[r] == primary)  # the primary's own member
    follower = own if own in followers else followers[0]
    region = raft_leader if which == "raft-leader" else follower
    [leader_before] = lab.leaders()
    t0 = time.time()
    check = Check(lab, t0)
    lab.etcd[region].kill()
    lab.net.note(f"SIGKILLed etcd-{region} ({which})")
    observe(3 * TTL)
    t1 = time.time()

    check(not lab.failovers(since=t0), f"failovers: {lab.failovers(since=t0)}")
    check(writers(lab, t0, t1) == {primary}, f"writers: {writers(lab, t0, t1)}")
    fenced = {r: fences(lab, r, t0) for r in REGIONS}
    check(not any(fenced.values()), f"an agent fenced its node: {fenced}")
    elections = leader_elections(lab, t0)
    gap = leaderless_gaps(lab, t0, t1)
    if which == "follower":
        check(not elections, f"leadership changed: {elections} (leader was {leader_before})")
        lost = [
            round(r["t"] - t0, 2)
            for r in lab.samples.of("orch", t0, t1)
            if r["inst"] == leader_before and r.get("ok") and not r.get("leader")
        ]
        check(not lost, f"{leader_before} did not lead at t={lost}")
    else:
        check(len(elections) <= 1, f"leadership flapped: {elections}")
        check(gap <= LEADER_CHANGE_BOUND, f"no leader for {gap:.2f}s")
    check(len(lab.leaders()) == 1, f"leaders now: {lab.leaders()}")
    print(
        f"etcd {which} (m-{region}) killed: leader elections {len(elections)}, "
        f"longest time without a leader sample {gap:.2f}s"
    )

    lab.start_etcd(region)
    lab.wait_etcd((region,))
    lab.wait_baseline(timeout=30, primary=primary)


def test_a_partition_longer_than_fence_after_fails_over_once_after_the_fence(
    labs: Holder,
) -> None:
    lab = labs.get(primary=NODE["us-east"])
    lab.make_leader("us-east")  # the hard case: the leader is cut off with the primary
    leader_before = lab.leaders()
    t0 = time.time()
    check = Check(lab, t0)
    lab.net.isolate("us-east")

    def new_primary() -> str | None:
        found = [n for n, role in lab.roles().items() if role == "primary"]
        return found[0] if found and found != [NODE["us-east"]] else None

    promoted = wait_for(new_primary, 45, "a new primary", lambda: lab.diagnostics(t0 - 2))
    t_new = time.time()
    observe(1)
    lab.net.heal("us-east")
    t_heal = time.time()
    wait_for(
        lambda: lab.roles().get(NODE["us-east"]) == "replica",
        45,
        "us-east back as a replica",
        lambda: lab.diagnostics(t0 - 2),
    )
    lab.wait_baseline(timeout=30, primary=promoted)
    t1 = time.time()

    # Exactly one failover, to a node outside us-east.
    failovers = lab.failovers(since=t0)
    check(len(failovers) == 1, f"failovers: {failovers}")
    (by, inc) = failovers[0]
    check(inc.new_primary == promoted != NODE["us-east"], f"{inc.new_primary} vs {promoted}")
    check(
        writers(lab, t0, t1) == {NODE["us-east"], promoted},
        f"nodes that took writes: {writers(lab, t0, t1)}",
    )

    # The agent fenced us-east itself, without quorum, before the promotion started.
    record = lab.agent_record("us-east")
    self_fenced = lab.log_events(lab.agents["us-east"], "SELF_FENCED", t0)
    check(len(self_fenced) == 1, f"SELF_FENCED events: {self_fenced}; record {record}")
    t_fenced = self_fenced[0]["t"]
    check(
        record.get("fence_reason") == "SELF_FENCED" and record.get("fenced_at"),
        f"agent record {record}",
    )
    t_fenced = max(t_fenced, float(record["fenced_at"]))
    promote = [
        r for r in lab.journal(by) if r.get("kind") == "step_started" and r.get("step") == "promote"
    ]
    check(promote and promote[-1]["at"] >= t0, f"no promote step in {by}'s journal")
    t_promote = float(promote[-1]["at"])
    check(
        t_fenced < t_promote,
        f"promotion started at {t_promote:.3f}, before the agent's fence at {t_fenced:.3f} "
        f"({t_promote - t_fenced:+.3f}s)",
    )

    # Never two writable primaries; the old one takes no write after its fence, nor after the heal.
    spans = writable_spans(lab, t0 - 1, t1)
    check(not overlaps(spans), f"two writable primaries: {overlaps(spans)}")
    late = [r for r in lab.samples.of("db", t_fenced, t1) if r["node"] == NODE["us-east"]]
    check(not any(r.get("write") for r in late), "us-east took a write after its fence")
    last_old = max(e for _s, e in spans[NODE["us-east"]])
    first_new = min(s for s, _e in spans[promoted])

    print(
        "long partition:"
        f" leader before {leader_before}, failover by {INSTANCE[by]};"
        f" agent fenced at +{t_fenced - t0:.2f}s, promotion started at +{t_promote - t0:.2f}s"
        f" (fence-before-promote margin {t_promote - t_fenced:.2f}s);"
        f" new primary {promoted} seen writable at +{first_new - t0:.2f}s"
        f" (sampler: last write on us-east at +{last_old - t0:.2f}s);"
        f" heal at +{t_heal - t0:.2f}s (new primary observed at +{t_new - t0:.2f}s);"
        f" us-east a replica again and the lab at rest at +{t1 - t0:.2f}s"
    )


def test_killing_the_leader_moves_the_leadership_within_the_lease_ttl(labs: Holder) -> None:
    lab = labs.get()
    [leader] = lab.leaders()
    region = next(r for r in REGIONS if INSTANCE[r] == leader)
    primary = next(n for n, role in lab.roles().items() if role == "primary")
    t0 = time.time()
    check = Check(lab, t0)
    lab.orch[region].kill()
    lab.net.note(f"SIGKILLed {leader}")

    new = wait_for(
        lambda: [x for x in lab.leaders(within=0.5) if x != leader],
        LEADER_CHANGE_BOUND + 5,
        "a new leader",
        lambda: lab.diagnostics(t0 - 2),
    )
    elections = [e for e in leader_elections(lab, t0) if e[1] != leader]
    check(elections, f"no LEADER_ELECTED logged by {new}")
    took = elections[0][0] - t0
    check(
        took <= LEADER_CHANGE_BOUND,
        f"{elections[0][1]} led {took:.2f}s after the kill (bound {LEADER_CHANGE_BOUND:g}s)",
    )
    observe(2)
    check(not lab.failovers(since=t0), f"failovers: {lab.failovers(since=t0)}")
    check(writers(lab, t0, time.time()) == {primary}, "the primary changed")
    print(f"leader {leader} killed: {elections[0][1]} leads {took:.2f}s later")

    lab.start_orchestrator(region)
    lab.wait_baseline(timeout=30, primary=primary)
