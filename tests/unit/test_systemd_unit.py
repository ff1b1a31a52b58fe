"""deploy/systemd/helios-orchestrator.service: the directives the daemon relies on, consistent
with the code (drain grace, state_dir), and `systemd-analyze verify` clean where available."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.app import SHUTDOWN_GRACE
from orchestrator.config import Config

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "helios-orchestrator.service"


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    return float(value)


def parse() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_declares_notify_watchdog_restart_and_hardening() -> None:
    svc = dict(parse()["Service"])
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30s",
        "Restart": "on-failure",
        "RestartSec": "5s",
        "TimeoutStopSec": "45s",
        "User": "helios",
        "Group": "helios",
        "StateDirectory": "helios-orchestrator",
        "ConfigurationDirectory": "helios-orchestrator",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
        "KillMode": "mixed",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert svc["ExecStart"] == (
        "/usr/bin/orchestrator run --config /etc/helios-orchestrator/orchestrator.yaml"
    )
    assert "DynamicUser" not in svc
    assert svc["EnvironmentFile"].startswith("-/etc/helios-orchestrator/")
    assert seconds(svc["TimeoutStartSec"]) >= 30
    assert parse()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_agrees_with_the_code() -> None:
    svc = parse()["Service"]
    # The stop timeout leaves room for the failover drain plus the last tick and the shutdown.
    assert seconds(svc["TimeoutStopSec"]) >= SHUTDOWN_GRACE + 10
    # The state directory systemd creates is the config's default state_dir.
    default_state_dir = Config.model_fields["state_dir"].default
    assert default_state_dir == f"/var/lib/{svc['StateDirectory']}"
    assert f"/etc/{svc['ConfigurationDirectory']}/" in svc["ExecStart"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this venv's console script.
    exe = Path(sys.executable).with_name("orchestrator")
    text = UNIT.read_text().replace("ExecStart=/usr/bin/orchestrator", f"ExecStart={exe}")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values too: any message is a failure.
    assert out.returncode == 0, out.stderr
    assert (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr
