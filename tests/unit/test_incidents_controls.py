"""Incident records and operator controls on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.controls import load_controls, load_memory, save_memory
from orchestrator.decision import Memory, State
from orchestrator.errors import HeliosError
from orchestrator.incidents import Incident, IncidentStore, new_id


def write_config(tmp_path: Path, **sections: Any) -> Path:
    """``tmp_path/c.yaml``: service ``svc``, one node in one region, state in
    ``tmp_path/state``, plus ``sections`` (top-level config sections)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps(
            {
                "service": "svc",
                "state_dir": str(tmp_path / "state"),
                **sections,
                "regions": [
                    {
                        "name": "us-east",
                        "priority": 1,
                        "nodes": [{"name": "n1", "dsn": "host=127.0.0.1 port=5"}],
                    }
                ],
            }
        )
    )
    return cfg


def test_incident_timeline_rto_and_atomic_save(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path)
    inc = Incident(id=new_id(1000.0), opened_at=1000.0, primary="us-east-1", region="us-east")
    inc.event("first_failure", 1000.0)
    inc.event("promoted", 1003.2, "us-west-1 timeline 2")
    inc.event("confirmed", 1002.5)
    inc.event("confirmed", 1009.0)  # only the first occurrence counts
    inc.event("first_verified_write", 1004.25)
    assert [e["event"] for e in inc.timeline] == [
        "first_failure",
        "confirmed",
        "promoted",
        "first_verified_write",
    ]
    assert inc.rto_seconds == pytest.approx(4.25)
    store.save(inc)
    assert not list(store.dir.glob(".inc-*"))  # no temporary file left behind
    again = store.load(inc.id)
    assert again == inc
    assert store.open_incident() == inc
    inc.close("failed_over", 1010.0)
    store.save(inc)
    assert store.open_incident() is None
    assert [i.id for i in store.all()] == [inc.id]
    with pytest.raises(HeliosError, match="no incident"):
        store.load("inc-nope")


def test_memory_round_trip_and_corruption(tmp_path: Path) -> None:
    assert load_memory(tmp_path) == Memory()
    mem = Memory(
        state=State.COOLDOWN,
        since=5.0,
        reason="FAILED_OVER",
        last_failover_at=4.0,
        last_failover_from="us-east-1",
    )
    save_memory(tmp_path, mem)
    assert load_memory(tmp_path) == mem
    (tmp_path / "decision.json").write_text("{not json")
    with pytest.raises(HeliosError, match="unreadable"):
        load_memory(tmp_path)


def test_cli_pause_resume_ack_and_incidents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path)
    assert main(["pause", "-c", str(cfg)]) == 0
    assert load_controls(tmp_path / "state").paused is True
    assert main(["resume", "-c", str(cfg)]) == 0
    assert load_controls(tmp_path / "state").paused is False
    assert main(["ack", "-c", str(cfg)]) == 0
    assert load_controls(tmp_path / "state").acked_at is not None
    capsys.readouterr()
    assert main(["incidents", "-c", str(cfg)]) == 0
    assert "no incidents recorded" in capsys.readouterr().out
    inc = Incident(id="inc-x", opened_at=1.0, primary="n1", region="us-east")
    inc.event("first_verified_write", 4.5)
    IncidentStore(tmp_path / "state").save(inc)
    assert main(["incidents", "-c", str(cfg), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rto_seconds"] == 3.5
    assert main(["incidents", "inc-x", "-c", str(cfg)]) == 0
    assert "first_verified_write" in capsys.readouterr().out
    assert main(["incidents", "inc-missing", "-c", str(cfg)]) == 1


def test_daemon_refuses_to_start_with_a_broken_runbook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "failover.yaml").write_text(
        "name: failover\nsteps:\n  - name: promote\n    action: promote\n    params: {node: x}\n"
    )
    (books / "switchover.yaml").write_text(
        "name: switchover\nsteps:\n  - name: nope\n    action: teleport\n    timeout: 5s\n"
    )
    cfg = write_config(tmp_path, failover={"runbooks_dir": str(books)}, listen={"port": 0})
    assert main(["run", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "steps[0] (promote).timeout" in err
    assert "teleport" in err
    assert "Traceback" not in err
