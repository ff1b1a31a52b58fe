"""Configuration: every bad input gives a message naming the field; the CLI exits non-zero."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.config import json_schema, load_config, parse_config, parse_duration
from orchestrator.errors import ConfigError


def good() -> dict[str, Any]:
    return {
        "service": "helios-db",
        "objectives": {"rto": "300s", "rpo": "1m"},
        "regions": [
            {
                "name": "us-east",
                "priority": 1,
                "nodes": [
                    {
                        "name": "us-east-1",
                        "driver": "postgres",
                        "dsn": "host=10.0.0.1 port=5432 dbname=app user=helios",
                        "password": "env:HELIOS_TEST_PW",
                        "health_url": "http://10.0.0.1:8008/health",
                        "dns_target": "10.0.0.1",
                    }
                ],
            },
            {
                "name": "us-west",
                "priority": 2,
                "nodes": [{"name": "us-west-1", "dsn": "host=db.west.example port=5432"}],
            },
            {
                "name": "eu",
                "priority": 3,
                "nodes": [{"name": "eu-1", "dsn": "host=db.eu.example", "dns_target": "db.eu."}],
            },
        ],
        "probes": {"interval": "1s", "timeout": "800ms", "failure_threshold": 3},
        "listen": {"address": "127.0.0.1", "port": 9187},
    }


@pytest.fixture(autouse=True)
def _password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_TEST_PW", "s3cret-value")


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_good_config_parses_with_units_and_order() -> None:
    cfg = parse_config(good())
    assert cfg.objectives.rto == 300.0
    assert cfg.objectives.rpo == 60.0
    assert cfg.probes.timeout == pytest.approx(0.8)
    assert [r.name for r in cfg.ordered_regions()] == ["us-east", "us-west", "eu"]
    node = cfg.regions[0].nodes[0]
    assert node.password is not None
    assert node.password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(cfg)
    assert "s3cret-value" not in str(cfg.model_dump())


def test_priority_not_list_order_decides_preference() -> None:
    data = good()
    data["regions"][0]["priority"], data["regions"][2]["priority"] = 3, 1
    assert [r.name for r in parse_config(data).ordered_regions()] == ["eu", "us-west", "us-east"]


def mutate(path: str, value: Any) -> dict[str, Any]:
    """Set a dotted path (``regions.0.nodes.0.dsn``) in a copy of the good config."""
    data = copy.deepcopy(good())
    parts = path.split(".")
    cur: Any = data
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if value is DELETE:
        del cur[int(last) if last.isdigit() else last]
    elif last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("service", "Bad_Name", "service", "not a valid name"),
        ("service", DELETE, "service", "Field required"),
        ("objectives.rto", "5 minutes", "objectives.rto", "invalid duration"),
        ("objectives.rpo", 0, "objectives.rpo", "greater than 0"),
        ("objectives.extra", 1, "objectives.extra", "unknown key"),
        ("regions", [], "regions", "at least 1"),
        ("regions.0.priority", 0, "regions[0].priority", "greater than or equal to 1"),
        ("regions.0.nodes", [], "regions[0].nodes", "at least 1"),
        ("regions.0.nodes.0.driver", "mysql", "regions[0].nodes[0].driver", "'postgres'"),
        ("regions.0.nodes.0.dsn", "host=x password=pw", "regions[0].nodes[0].dsn", "password"),
        ("regions.0.nodes.0.dsn", "port=5432", "regions[0].nodes[0].dsn", "must name a host"),
        ("regions.0.nodes.0.dsn", "host='unterminated", "regions[0].nodes[0].dsn", "libpq"),
        ("regions.0.nodes.0.password", "hunter2", "regions[0].nodes[0].password", "reference"),
        (
            "regions.0.nodes.0.password",
            "env:NOPE_UNSET_VAR",
            "regions[0].nodes[0].password",
            "NOPE_UNSET_VAR is not set",
        ),
        (
            "regions.0.nodes.0.password",
            "file:/nonexistent/pw",
            "regions[0].nodes[0].password",
            "cannot read secret file",
        ),
        ("regions.0.nodes.0.health_url", "ftp://x", "regions[0].nodes[0].health_url", "http"),
        (
            "regions.0.nodes.0.dns_target",
            "not a host!",
            "regions[0].nodes[0].dns_target",
            "neither an IP",
        ),
        ("regions.0.nodes.0.colour", "blue", "regions[0].nodes[0].colour", "unknown key"),
        ("regions.1.name", "us-east", "regions[1].name", "used twice"),
        ("regions.1.priority", 1, "regions[1].priority", "already used"),
        ("regions.2.nodes.0.name", "us-east-1", "regions[2].nodes[0].name", "used twice"),
        ("probes.timeout", "2s", "probes", "shorter than interval"),
        ("probes.failure_threshold", 0, "probes.failure_threshold", "greater than or equal to 1"),
        ("probes.interval", True, "probes.interval", "duration"),
        ("listen.address", "localhost", "listen.address", "not an IP address"),
        ("listen.port", 70000, "listen.port", "less than or equal to 65535"),
    ],
)
def test_each_bad_input_names_its_field(path: str, value: Any, field: str, words: str) -> None:
    problems = problems_of(mutate(path, value))
    assert any(p.startswith(f"{field}:") and words in p for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    data = mutate("service", "Bad_Name")
    data["regions"][1]["priority"] = 1
    data["probes"]["timeout"] = "5s"
    data["regions"][0]["nodes"][0]["dsn"] = "host=x password=y"
    problems = problems_of(data)
    fields = {p.split(":")[0] for p in problems}
    assert {"service", "regions[1].priority", "probes", "regions[0].nodes[0].dsn"} <= fields


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = parse_config(mutate("regions.0.nodes.0.password", f"file:{secret}"))
    pw = cfg.regions[0].nodes[0].password
    assert pw is not None
    assert pw.get_secret_value() == "from-file"


def test_secret_values_never_leak_into_errors() -> None:
    problems = problems_of(mutate("regions.0.nodes.0.dsn", "host=x password=topsecret99"))
    assert not any("topsecret99" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300s", 300), ("5m", 300), ("1h", 3600), ("800ms", 0.8), (2, 2), ("1.5s", 1.5), ("7", 7)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_yaml_errors_have_line_numbers(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("service: a\nregions: []\nservice: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(dup)
    assert "duplicate key 'service'" in info.value.problems[0]
    assert "line 3" in info.value.problems[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: [oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "YAML syntax error at line" in info.value.problems[0]
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listy)


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_cli_config_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(write(tmp_path, good()))]) == 0
    out = capsys.readouterr().out
    assert "OK" in out
    assert "3 regions" in out


def test_cli_config_check_lists_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = mutate("regions.0.nodes.0.colour", "blue")
    data["probes"]["timeout"] = "3s"
    assert main(["config", "check", str(write(tmp_path, data))]) == 2
    err = capsys.readouterr().err
    assert "regions[0].nodes[0].colour: unknown key" in err
    assert "probes: timeout (3s) must be shorter than interval (1s)" in err
    assert "Traceback" not in err


def test_cli_config_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_cli_run_without_config_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HELIOS_CONFIG", raising=False)
    assert main(["run"]) == 2
    assert "--config" in capsys.readouterr().err


def test_schema_is_json_and_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads(json.dumps(json_schema()))
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"service", "regions"}
    node = schema["$defs"]["Node"]
    assert node["additionalProperties"] is False
    assert "env|file" in json.dumps(node["properties"]["password"])
