"""The sandbox's network placement (addresses and namespaces per region), without PostgreSQL:
validation, its record in sandbox.json, pg_hba.conf, and the argv that runs a program in a
namespace as the PostgreSQL user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import SandboxError
from orchestrator.sandbox import Sandbox
from orchestrator.sandbox.pgbin import HBA, PgBinaries, PgTools, hba
from orchestrator.sandbox.placement import LOOPBACK_ADDRESSES, Placement, netns_prefix
from orchestrator.sandbox.procs import RunAs

LAB = Placement.of(
    ["10.231.7.1", "10.231.7.2", "10.231.7.3"], ["ns-a", "ns-b", "ns-c"], ["10.231.7.0/24"]
)


def test_the_default_placement_is_the_loopback_sandbox(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", base_port=56000)
    assert Placement().hosts == LOOPBACK_ADDRESSES
    assert not Placement().uses_netns
    assert [sb.host(r) for r in Sandbox.REGIONS] == list(LOOPBACK_ADDRESSES)
    assert hba() == HBA


def test_a_requested_placement_gives_the_hosts_until_one_is_recorded(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", base_port=56000, placement=LAB)
    assert [sb.host(r) for r in Sandbox.REGIONS] == list(LAB.hosts)
    assert sb.dns_target("eu") == "10.231.7.3"
    # What sandbox.json records wins (later commands only name the state directory).
    (tmp_path / "sb").mkdir()
    (tmp_path / "sb" / "sandbox.json").write_text(json.dumps({"placement": LAB.to_json()}))
    assert Sandbox(tmp_path / "sb").placement == LAB
    assert Placement.from_json(LAB.to_json()) == LAB
    assert Placement.from_json({"hosts": ["x"]}) is None
    assert Placement.from_json(None) is None


@pytest.mark.parametrize(
    ("hosts", "netns", "networks", "message"),
    [
        (["10.0.0.1", "10.0.0.2"], None, [], "3 regions"),
        (["10.0.0.1", "10.0.0.1", "10.0.0.3"], None, [], "must differ"),
        (["10.0.0.1", "db.example", "10.0.0.3"], None, [], "not an IPv4 address"),
        (["10.0.0.1", "10.0.0.2", "10.0.0.3"], None, ["10.0.0.0/33"], "not an IPv4 network"),
        (["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["a", "../b", None], [], "namespace name"),
    ],
)
def test_a_bad_placement_is_refused(
    hosts: list[str], netns: list[str | None] | None, networks: list[str], message: str
) -> None:
    with pytest.raises(SandboxError, match=message):
        Placement.of(hosts, netns, networks)


def test_pg_hba_admits_the_extra_networks() -> None:
    text = hba(["10.231.7.0/24"])
    assert text.startswith(HBA)
    assert "host replication replicator 10.231.7.0/24 trust\n" in text
    assert "host all all 10.231.7.0/24 scram-sha-256\n" in text


def test_programs_run_in_the_namespace_as_the_postgres_user() -> None:
    assert netns_prefix(None, 101, 104) == []
    prefix = netns_prefix("ns-a", 101, 104)
    assert prefix[1:4] == ["netns", "exec", "ns-a"]
    assert "--reuid=101" in prefix and "--regid=104" in prefix and prefix[-1] == "--"
    assert netns_prefix("ns-a", None, None)[-1] == "ns-a"  # not root: no user switch

    run_as = RunAs("postgres", 101, 104, frozenset({104}), "/var/lib/postgresql", switch=True)
    tools = PgTools(PgBinaries(Path("/usr/lib/postgresql/15/bin")), run_as, {})
    argv, ids = tools._launch(["postgres", "-D", "/data"])
    assert argv == ["postgres", "-D", "/data"] and ids == (101, 104, [])
    argv, ids = tools.in_netns("ns-b")._launch(["postgres", "-D", "/data"])
    assert argv[1:4] == ["netns", "exec", "ns-b"] and argv[-3:] == ["postgres", "-D", "/data"]
    assert ids == (None, None, None)  # ip netns exec needs root; setpriv drops to postgres
