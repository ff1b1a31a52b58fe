"""Control-API tokens: configuration rules and the 401/403 decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.auth import ANONYMOUS, Authenticator, Denied
from orchestrator.config import parse_config
from orchestrator.config_api import ApiSettings
from orchestrator.errors import ConfigError

OP = "o" * 20 + "perator-token"
VIEW = "v" * 20 + "iewer-token"


def settings(tmp: Path, tokens: list[tuple[str, str, str]], **extra: Any) -> ApiSettings:
    entries = []
    for name, value, role in tokens:
        path = tmp / f"{name}.token"
        path.write_text(value + "\n")
        entries.append({"name": name, "token": f"file:{path}", "role": role})
    return ApiSettings.model_validate({"tokens": entries, **extra})


def config_problems(tmp: Path, api: dict[str, Any]) -> list[str]:
    doc = {
        "service": "helios-db",
        "regions": [{"name": "us-east", "nodes": [{"name": "a", "dsn": "host=127.0.0.1"}]}],
        "api": api,
    }
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "test.yaml")
    return info.value.problems


def test_operator_viewer_and_anonymous(tmp_path: Path) -> None:
    auth = Authenticator(settings(tmp_path, [("oncall", OP, "operator"), ("graf", VIEW, "viewer")]))
    assert auth.for_write(f"Bearer {OP}").name == "oncall"
    assert auth.for_write(f"bearer   {OP}  ").name == "oncall"  # scheme is case-insensitive
    assert auth.for_read(None) is ANONYMOUS
    assert auth.for_read(f"Bearer {VIEW}").name == "graf"
    with pytest.raises(Denied) as viewer:
        auth.for_write(f"Bearer {VIEW}")
    assert viewer.value.status == 403
    for header in (None, "", "Bearer", f"Basic {OP}", f"Bearer {OP}x", f"Bearer {OP[:-1]}"):
        with pytest.raises(Denied) as info:
            auth.for_write(header)
        assert info.value.status == 401
        assert OP not in info.value.message
    with pytest.raises(Denied) as wrong_read:
        auth.for_read("Bearer not-a-token-at-all")
    assert wrong_read.value.status == 401


def test_reads_can_require_a_token(tmp_path: Path) -> None:
    auth = Authenticator(settings(tmp_path, [("graf", VIEW, "viewer")], read_requires_token=True))
    with pytest.raises(Denied) as info:
        auth.for_read(None)
    assert info.value.status == 401
    assert auth.for_read(f"Bearer {VIEW}").role == "viewer"


def test_without_an_operator_token_the_api_is_read_only(tmp_path: Path) -> None:
    for auth in (
        Authenticator(ApiSettings()),
        Authenticator(settings(tmp_path, [("graf", VIEW, "viewer")])),
    ):
        with pytest.raises(Denied) as info:
            auth.for_write(f"Bearer {VIEW}")
        assert info.value.status == 403
        assert info.value.code == "API_READ_ONLY"


def test_token_rules_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_TOKEN", "abc123")
    monkeypatch.setenv("TOKEN_A", OP)
    monkeypatch.setenv("TOKEN_B", OP)
    short = config_problems(tmp_path, {"tokens": [{"name": "x", "token": "env:SHORT_TOKEN"}]})
    assert any(p.startswith("api.tokens[0]") and "shorter than 16" in p for p in short), short
    assert not any("abc123" in p for p in short)
    literal = config_problems(tmp_path, {"tokens": [{"name": "x", "token": OP}]})
    assert any("api.tokens[0].token" in p and "by reference" in p for p in literal), literal
    assert not any(OP in p for p in literal)
    same = config_problems(
        tmp_path,
        {
            "tokens": [
                {"name": "a", "token": "env:TOKEN_A"},
                {"name": "b", "token": "env:TOKEN_B"},
            ]
        },
    )
    assert any(p.startswith("api") and "same value" in p for p in same), same
    names = config_problems(
        tmp_path,
        {
            "tokens": [
                {"name": "a", "token": "env:TOKEN_A"},
                {"name": "a", "token": "env:SHORT_TOKEN"},
            ]
        },
    )
    assert any("api.tokens[1]" in p for p in names), names
    role = config_problems(
        tmp_path, {"tokens": [{"name": "a", "token": "env:TOKEN_A", "role": "admin"}]}
    )
    assert any("api.tokens[0].role" in p for p in role), role
