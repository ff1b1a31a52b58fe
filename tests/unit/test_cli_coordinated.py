"""With coordination configured, only the leader acts: the CLI's mutating commands refuse to
act from their own process (exit 2, saying to use --daemon); dry runs still work locally."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main


def config(tmp: Path) -> Path:
    doc = {
        "service": "helios-db",
        "regions": [
            {
                "name": "us-east",
                "priority": 1,
                "nodes": [{"name": "a", "dsn": "host=127.0.0.1 port=1"}],
            },
            {
                "name": "us-west",
                "priority": 2,
                "nodes": [{"name": "b", "dsn": "host=127.0.0.1 port=2"}],
            },
        ],
        "state_dir": str(tmp / "state"),
        "coordination": {"endpoints": ["http://127.0.0.1:3"], "ttl": "6s", "timeout": "1s"},
    }
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["pause"],
        ["resume"],
        ["ack"],
        ["failover"],
        ["switchover", "--to", "us-west"],
        ["drill"],
    ],
)
def test_mutating_commands_need_the_leader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main([*argv, "-c", str(config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2
    assert "only the leader acts" in err and "--daemon" in err
    assert not (tmp_path / "state" / "controls.json").exists()


def test_a_local_dry_run_is_still_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", "--dry-run", "-c", str(config(tmp_path))]) == 0
    assert "dry run" in capsys.readouterr().out
