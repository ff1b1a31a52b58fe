"""deploy/systemd/helios-agent@.service: the directives the node agent relies on, consistent
with the code (the stop timeout covers a rejoin in flight, the CLI accepts the ExecStart
arguments), and `systemd-analyze verify` clean where available (template and instance)."""

from __future__ import annotations

import argparse
import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli_agent import add_parsers
from orchestrator.config_agent import AgentSettings

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "helios-agent@.service"
ORCHESTRATOR_UNIT = UNIT.with_name("helios-orchestrator.service")


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    return float(value)


def parse(path: Path = UNIT) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_unit_declares_notify_watchdog_restart_and_hardening() -> None:
    svc = dict(parse()["Service"])
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "20s",
        "Restart": "always",
        "KillMode": "mixed",
        "User": "root",
        "StateDirectory": "helios-agent",
        "AmbientCapabilities": "",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert parse()["Unit"]["StartLimitIntervalSec"] == "0"
    assert parse()["Install"]["WantedBy"] == "multi-user.target"
    # The same hardening as the orchestrator's unit, except what the fence needs: root with a
    # few capabilities instead of none, and /proc left visible.
    theirs = dict(parse(ORCHESTRATOR_UNIT)["Service"])
    same = [
        "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
        "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictAddressFamilies",
        "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
        "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
        "SystemCallErrorNumber", "EnvironmentFile",
    ]  # fmt: skip
    assert {k: svc.get(k) for k in same} == {k: theirs[k] for k in same}
    caps = set(svc["CapabilityBoundingSet"].split())
    assert {"CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_CHOWN"} <= caps
    assert not caps & {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_ADMIN", "CAP_SYS_MODULE"}
    assert "ProtectProc" not in svc  # the fence must see the server's processes
    assert "DynamicUser" not in svc


def test_unit_agrees_with_the_code() -> None:
    svc = parse()["Service"]
    defaults = AgentSettings()
    # A rejoin in flight finishes on SIGTERM: the stop timeout must cover it.
    assert seconds(svc["TimeoutStopSec"]) >= defaults.rejoin_timeout + 10
    # The watchdog allows for a tick (3 intervals or 5 s) and a ping every half period.
    assert seconds(svc["WatchdogSec"]) / 2 >= max(3 * defaults.interval, 5.0)
    # The CLI accepts the ExecStart line, with the instance name as the node.
    argv = shlex.split(svc["ExecStart"].replace("%i", "us-east-1"))
    assert argv[0] == "/usr/bin/orchestrator" and argv[1] == "agent"
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv[1:])
    assert args.node == "us-east-1"
    assert args.state_dir == f"/var/lib/{svc['StateDirectory']}"
    assert args.config.startswith(f"/etc/{svc['ConfigurationDirectory']}/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", ["helios-agent@.service", "helios-agent@us-east-1.service"])
def test_systemd_analyze_verify_is_clean(tmp_path: Path, name: str) -> None:
    # verify insists that ExecStart exists: point it at this venv's console script.
    exe = Path(sys.executable).with_name("orchestrator")
    text = UNIT.read_text().replace("ExecStart=/usr/bin/orchestrator", f"ExecStart={exe}")
    unit = tmp_path / name
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
