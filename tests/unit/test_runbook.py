"""Runbooks: the shipped ones validate; every broken variant names the step and the field;
templates render strictly and keep native types."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import ConfigError, RunbookError
from orchestrator.runbook import (
    ACTION_PARAMS,
    describe,
    load_runbook,
    load_runbooks,
    parse_runbook,
    render_compensation,
    render_params,
    template_variables,
)

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"

CONTEXT: dict[str, Any] = {
    "old_primary": {"name": "us-east-1", "region": "us-east"},
    "candidate": {"name": "us-west-1", "region": "us-west"},
    "other_replicas": ["eu-1"],
    "replica_slots": ["eu_1", "us_east_1"],
}


def good() -> dict[str, Any]:
    return {
        "name": "mini",
        "description": "test runbook",
        "steps": [
            {"name": "fence", "action": "fence", "params": {"node": "{{ a }}"}, "timeout": "5s"},
            {
                "name": "promote",
                "action": "promote",
                "params": {"node": "{{ b }}"},
                "timeout": "5s",
                "retry": {"attempts": 3, "backoff": "100ms", "max_delay": "1s"},
            },
            {"name": "notify", "action": "notify", "params": {"event": "x"}, "timeout": 1},
        ],
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(RunbookError) as info:
        parse_runbook(data, ACTION_PARAMS, "test.yaml")
    assert isinstance(info.value, ConfigError)
    return info.value.problems


# --- the shipped runbooks ---------------------------------------------------------------------


def test_shipped_runbooks_validate_against_the_product_actions() -> None:
    books = load_runbooks(RUNBOOKS, ACTION_PARAMS)
    assert set(books) >= {"failover", "switchover"}
    failover = books["failover"]
    assert [s.name for s in failover.steps] == [
        "fence",
        "promote",
        "ensure_slots",
        "repoint",
        "switch_dns",
        "verify_write",
        "notify",
    ]
    assert failover.step("fence").on_failure == "abort"
    assert failover.step("promote").retry.attempts == 2
    assert failover.step("switch_dns").timeout == 120.0
    assert failover.step("verify_write").retry.attempts == 5
    switchover = books["switchover"]
    assert switchover.step("wait_replay").params["lsn"] == "{{ steps.stop_writes.lsn }}"
    assert switchover.step("rejoin").timeout == 180.0
    for book in books.values():
        assert template_variables(book) == set(CONTEXT)


def test_shipped_runbooks_render_against_a_plan_context() -> None:
    sw = load_runbook(RUNBOOKS / "switchover.yaml", ACTION_PARAMS)
    ctx = {**CONTEXT, "steps": {"stop_writes": {"lsn": "0/3000060"}}}
    rendered = {s.name: render_params(s, ctx) for s in sw.steps}
    assert rendered["wait_replay"] == {"node": "us-west-1", "lsn": "0/3000060"}
    assert rendered["repoint"] == {"nodes": ["eu-1"], "upstream": "us-west-1"}
    assert rendered["ensure_slots"]["slots"] == ["eu_1", "us_east_1"]
    assert rendered["rejoin"] == {"node": "us-east-1", "upstream": "us-west-1"}


def test_describe_lists_every_step_with_its_policy() -> None:
    lines = describe(load_runbook(RUNBOOKS / "failover.yaml", ACTION_PARAMS))
    assert lines[0].startswith("failover: ")
    assert len(lines) == 8
    assert "fence: fence node={{ old_primary.name }}" in lines[1]
    assert "timeout 60s, 2 attempts" in lines[1] and "on failure abort" in lines[1]


# --- broken variants: each message names the step (index and name) and the field ------------


def _mutate(**changes: Any) -> dict[str, Any]:
    data = good()
    idx = changes.pop("index", 1)
    step = data["steps"][idx]
    for k, v in changes.items():
        if v is None:
            step.pop(k, None)
        else:
            step[k] = v
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _mutate(action="promot"),
            "steps[1] (promote).action: unknown action 'promot' (known: approve, ",
        ),
        (
            _mutate(params={"node": "x", "force": True}),
            "steps[1] (promote).params.force: unknown parameter for action promote (accepts: node)",
        ),
        (_mutate(timeout=None), "steps[1] (promote).timeout: field required"),
        (_mutate(timeout="0s"), "steps[1] (promote).timeout: input should be greater than 0"),
        (_mutate(timeout="soon"), "steps[1] (promote).timeout: invalid duration 'soon'"),
        (
            _mutate(on_failure="retry"),
            "steps[1] (promote).on_failure: input should be 'abort', 'continue' or 'compensate'",
        ),
        (
            _mutate(on_failure="compensate"),
            "steps[1] (promote).compensate: required when on_failure is compensate",
        ),
        (
            _mutate(compensate={"action": "notify", "params": {"event": "undo"}}),
            "steps[1] (promote).compensate: only allowed with on_failure: compensate",
        ),
        (
            _mutate(on_failure="compensate", compensate={"action": "unfence"}),
            "steps[1] (promote).compensate.action: unknown action 'unfence'",
        ),
        (
            _mutate(name="fence"),
            "steps[1] (fence).name: step name 'fence' is used twice (first at steps[0])",
        ),
        (
            _mutate(params={"node": "{{ candidate.name }"}),
            "steps[1] (promote).params.node: template syntax error: unexpected '}' (line 1)",
        ),
        (
            _mutate(params={"node": "{{ steps.notify.node }}"}),
            "steps[1] (promote).params.node: refers to steps.notify, which is not an earlier step",
        ),
        (_mutate(retry={"attempts": 0}), "steps[1] (promote).retry.attempts: input should be"),
        (_mutate(timout="5s"), "steps[1] (promote).timout: unknown key"),
        (_mutate(name="Promote-DB"), "steps[1] (Promote-DB).name: 'Promote-DB' is not a valid"),
    ],
    ids=lambda v: "" if isinstance(v, dict) else v.split(": ")[0] + ": " + v.split(": ")[1][:20],
)
def test_broken_runbook_names_step_and_field(data: dict[str, Any], expected: str) -> None:
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once_in_step_order() -> None:
    data = good()
    data["steps"][2]["action"] = "nope"
    data["steps"][0].pop("timeout")
    data["steps"][1]["params"] = {"node": "{% if %}"}
    problems = problems_of(data)
    assert [p.split(" ")[0] for p in problems] == ["steps[0]", "steps[1]", "steps[2]"]


def test_yaml_errors_and_duplicate_keys_are_reported(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nname: y\nsteps: []\n")
    with pytest.raises(RunbookError, match="duplicate key 'name'"):
        load_runbook(f, ACTION_PARAMS)
    f.write_text("name: [x\n")
    with pytest.raises(RunbookError, match="YAML syntax error at line"):
        load_runbook(f, ACTION_PARAMS)


def test_load_runbooks_collects_problems_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(good()))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(good()))
    bad = _mutate(timeout=None)
    bad["name"] = "other"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "README.md").write_text("not a runbook")
    with pytest.raises(RunbookError) as info:
        load_runbooks(tmp_path, ACTION_PARAMS)
    assert info.value.problems == [
        "b.yaml: name: runbook 'mini' is defined twice",
        "c.yaml: steps[1] (promote).timeout: field required",
    ]


def test_any_params_allowed_when_the_action_declares_none() -> None:
    data = _mutate(action="custom", params={"whatever": 1})
    rb = parse_runbook(data, {**ACTION_PARAMS, "custom": None})
    assert rb.steps[1].params == {"whatever": 1}


# --- rendering --------------------------------------------------------------------------------


def _step(params: dict[str, Any]) -> Any:
    data = good()
    data["steps"] = [{"name": "s", "action": "x", "params": params, "timeout": 1}]
    return parse_runbook(data, {"x": None}).steps[0]


def test_single_expression_keeps_native_types() -> None:
    step = _step(
        {
            "n": "{{ count }}",
            "f": "{{ ratio * 2 }}",
            "lst": "{{ nodes }}",
            "mapped": "{{ nodes | map('upper') | list }}",
            "d": "{{ obj }}",
            "s": "{{ count }} nodes",
            "padded": " {{ count }}",
            "lsn": "{{ lsn }}",
            "nested": {"inner": ["{{ count }}", "literal", 7]},
            "plain": 3,
        }
    )
    ctx = {"count": 3, "ratio": 0.25, "nodes": ["a", "b"], "obj": {"k": 1}, "lsn": "123"}
    out = render_params(step, ctx)
    assert out == {
        "n": 3,
        "f": 0.5,
        "lst": ["a", "b"],
        "mapped": ["A", "B"],
        "d": {"k": 1},
        "s": "3 nodes",
        "padded": " 3",
        "lsn": "123",  # a string stays a string: no literal_eval of rendered text
        "nested": {"inner": [3, "literal", 7]},
        "plain": 3,
    }
    out["lst"].append("c")
    assert ctx["nodes"] == ["a", "b"], "rendered values are copies, never the context's objects"


def test_unknown_template_variable_names_step_and_param() -> None:
    step = _step({"node": "{{ candidate.name }}", "ok": "fine", "deep": ["{{ missing }}"]})
    with pytest.raises(RunbookError) as info:
        render_params(step, {}, source="failover")
    assert info.value.source == "failover"
    assert info.value.problems == [
        "s.params.node: 'candidate' is undefined",
        "s.params.deep[0]: 'missing' is undefined",
    ]
    with pytest.raises(RunbookError, match=r"s.params.node: 'dict object' has no attribute"):
        render_params(step, {"candidate": {}, "missing": 1})
    with pytest.raises(RunbookError, match=r"s.params.node: .*undefined"):
        render_params(_step({"node": "x-{{ candidate }}"}), {})


def test_sandbox_refuses_unsafe_attribute_access() -> None:
    step = _step({"x": "{{ ''.__class__.__mro__ }}"})
    with pytest.raises(RunbookError, match=r"s\.params\.x"):
        render_params(step, {})


def test_compensation_params_render_with_their_own_path() -> None:
    data = good()
    data["steps"][1].update(
        on_failure="compensate",
        compensate={"action": "notify", "params": {"event": "undo {{ b }}"}},
    )
    step = parse_runbook(data, ACTION_PARAMS).steps[1]
    assert render_compensation(step, {"b": "db2"}) == {"event": "undo db2"}
    with pytest.raises(RunbookError, match=r"promote.compensate.params.event: 'b' is undefined"):
        render_compensation(step, {})


def test_models_are_immutable_and_shipped_params_are_untouched_by_rendering() -> None:
    rb = load_runbook(RUNBOOKS / "failover.yaml", ACTION_PARAMS)
    before = copy.deepcopy(rb.model_dump())
    for s in rb.steps:
        render_params(s, CONTEXT)
    assert rb.model_dump() == before
    with pytest.raises(ValueError, match="frozen"):
        rb.steps[0].timeout = 1.0  # type: ignore[misc]
