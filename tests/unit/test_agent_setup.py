"""The node agent's configuration checks, its state file, and its role mapping (no database,
no coordination service: everything here is refused or read before either is contacted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.agent import AgentRecord, _local_role, check_agent_config
from orchestrator.agentlogic import LocalRole
from orchestrator.config import Config
from orchestrator.config_agent import AgentSettings
from orchestrator.errors import ConfigError, UsageError
from probes.base import Role


def config(**over: Any) -> Config:
    node: dict[str, Any] = {"name": "a-1", "dsn": "host=127.0.0.1 port=55999"}
    node.update(over.pop("node", {}))
    doc: dict[str, Any] = {
        "service": "helios-test",
        "regions": [{"name": "r1", "priority": 1, "nodes": [node]}],
        "coordination": {"endpoints": ["http://127.0.0.1:1"], "ttl": 3, "timeout": 0.5},
        "agent": {"fence_after": 3, "interval": 0.5},
    }
    doc.update(over)
    return Config.model_validate(doc)


def test_agent_settings_defaults_and_bounds() -> None:
    s = AgentSettings()
    assert (s.fence_after, s.interval, s.fence_timeout, s.rejoin_timeout) == (15, 1, 30, 120)
    with pytest.raises(ValidationError, match="at least two intervals"):
        AgentSettings(fence_after=1.5, interval=1.0)
    with pytest.raises(ValidationError):
        AgentSettings(fence_timeout=0)


def test_checks_before_anything_runs(tmp_path: Path) -> None:
    fenceable = {"fence_command": ["/bin/true"]}
    check_agent_config(config(node=fenceable), "a-1", None)
    check_agent_config(config(), "a-1", tmp_path)  # the agent's own hard stop
    with pytest.raises(UsageError, match="pass --data-dir"):
        check_agent_config(config(), "a-1", None)
    with pytest.raises(UsageError, match="no node named 'b-9'"):
        check_agent_config(config(node=fenceable), "b-9", None)
    with pytest.raises(ConfigError, match="needs a coordination section"):
        check_agent_config(config(node=fenceable, coordination=None), "a-1", None)
    # fence_after must outlast one check interval plus one slow-but-successful call.
    with pytest.raises(ConfigError, match=r"must exceed agent.interval plus"):
        check_agent_config(
            config(node=fenceable, agent={"fence_after": 1.0, "interval": 0.5}), "a-1", None
        )


def test_state_file_round_trip_and_damage(tmp_path: Path) -> None:
    path = tmp_path / "a-1.json"
    assert AgentRecord.load(path, "a-1") == AgentRecord("a-1")  # absent: blank
    path.write_text(
        '{"node": "a-1", "fenced": true, "fenced_at": 12.5, "fence_reason": "SELF_FENCED", '
        '"last_role": "primary", "rejoined_at": null}'
    )
    rec = AgentRecord.load(path, "a-1")
    assert rec == AgentRecord("a-1", True, 12.5, "SELF_FENCED", LocalRole.PRIMARY, None)
    assert AgentRecord.load(path, "b-2") == AgentRecord("b-2")  # another node's file
    path.write_text("{not json")
    assert AgentRecord.load(path, "a-1") == AgentRecord("a-1")
    path.write_text('{"node": "a-1", "fenced": "yes", "last_role": "down", "fenced_at": true}')
    assert AgentRecord.load(path, "a-1") == AgentRecord("a-1")


@pytest.mark.parametrize(
    ("role", "ok", "receiver", "expected"),
    [
        (Role.PRIMARY, True, None, LocalRole.PRIMARY),
        (Role.REPLICA, True, "streaming", LocalRole.REPLICA),
        (Role.REPLICA, True, "waiting", LocalRole.DETACHED),
        (Role.REPLICA, True, None, LocalRole.DETACHED),
        (Role.UNKNOWN, False, None, LocalRole.DOWN),
        (Role.PRIMARY, False, None, LocalRole.DOWN),
    ],
)
def test_local_role(role: Role, ok: bool, receiver: str | None, expected: LocalRole) -> None:
    assert _local_role(role, ok, receiver) is expected
