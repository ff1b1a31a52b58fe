"""Runbooks: typed, validated YAML lists of steps, and the rendering of their parameters.

Pure: no asyncio, no clock; the only I/O is :func:`load_runbook` / :func:`load_runbooks`
reading the files they are given.

Guarantees:

* :func:`load_runbook` either returns a fully validated :class:`Runbook` or raises
  :class:`~orchestrator.errors.RunbookError` listing **every** problem found, each naming the
  step by index and name and the field: ``steps[2] (promote).timeout: field required``.
* Refused: unknown keys, duplicate YAML keys, duplicate step names, actions not in
  ``known_actions``, parameters the action does not accept, templates that do not parse, and
  ``steps.<name>`` references to a step that does not run earlier.
* ``on_failure: compensate`` requires a ``compensate`` block and the block is refused otherwise.
* :func:`render_params` renders every string parameter (recursively through lists and dicts)
  in a sandbox with strict undefined names; a string that is exactly one ``{{ expression }}``
  keeps the expression's native type (numbers and lists survive). Any failure raises
  :class:`~orchestrator.errors.RunbookError` naming the step and the parameter.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes
from jinja2.environment import TemplateExpression
from jinja2.sandbox import SandboxedEnvironment
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.config import Duration, Name, read_yaml, validation_messages
from orchestrator.errors import RunbookError

KnownActions = Mapping[str, AbstractSet[str] | None]
"""Action name -> the parameter names it accepts (None: any)."""

ACTION_PARAMS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "fence": frozenset({"node"}),
        "promote": frozenset({"node"}),
        "ensure_slots": frozenset({"node", "slots"}),
        "repoint": frozenset({"nodes", "upstream"}),
        "switch_dns": frozenset({"region"}),
        "verify_write": frozenset({"region"}),
        "notify": frozenset({"event"}),
        "stop_writes": frozenset({"node"}),
        "wait_replay": frozenset({"node", "lsn"}),
        "rejoin": frozenset({"node", "upstream"}),
        "pause": frozenset({"seconds"}),
        "approve": frozenset(),
    }
)
"""The actions the product implements (``orchestrator.actions``) and their parameters; the CLI
and the daemon validate runbooks against it. Read-only."""

RESERVED_CONTEXT: Final = frozenset({"steps", "run"})
"""Context names the executor provides: ``steps.<name>`` (earlier results) and ``run.id``."""

_STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _check_step_name(value: str) -> str:
    if not _STEP_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid step name: use lower-case letters, digits and "
            "underscores, starting with a letter (templates refer to it as steps.<name>)"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


StepName = Annotated[str, AfterValidator(_check_step_name)]
OnFailure = Literal["abort", "continue", "compensate"]


class StepRetry(_Strict):
    """Retry policy of one step: transient errors only, exponential backoff capped."""

    attempts: int = Field(1, ge=1, le=100, description="Total attempts, the first included.")
    backoff: Duration = Field(0.5, ge=0, description="Delay before the first retry.")
    max_delay: Duration = Field(5.0, gt=0, description="Upper bound of any single delay.")


class Compensation(_Strict):
    """The action run once when the step fails and ``on_failure`` is ``compensate``."""

    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


def _compensate_problem(on_failure: object, has_block: bool) -> str | None:
    if on_failure == "compensate" and not has_block:
        return "compensate: required when on_failure is compensate"
    if has_block and on_failure in ("abort", "continue"):
        return "compensate: only allowed with on_failure: compensate"
    return None


class Step(_Strict):
    """One runbook step. ``params`` values may be Jinja2 templates (see :func:`render_params`)."""

    name: StepName
    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration = Field(gt=0, description="Deadline of each attempt.")
    retry: StepRetry = StepRetry()
    on_failure: OnFailure = "abort"
    compensate: Compensation | None = None
    approval: bool = Field(False, description="Ask the approver before running the step.")

    @model_validator(mode="after")
    def _compensation(self) -> Step:
        problem = _compensate_problem(self.on_failure, self.compensate is not None)
        if problem:
            raise ValueError(problem)
        return self


def _duplicate_problems(names: list[object]) -> list[str]:
    out: list[str] = []
    first: dict[object, int] = {}
    for i, n in enumerate(names):
        if n is None:
            continue
        if n in first:
            out.append(
                f"steps[{i}].name: step name {n!r} is used twice (first at steps[{first[n]}])"
            )
        first.setdefault(n, i)
    return out


class Runbook(_Strict):
    """An ordered list of steps."""

    name: Name
    description: str = ""
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Runbook:
        problems = _duplicate_problems([s.name for s in self.steps])
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


# --- templates --------------------------------------------------------------------------------

_ENV: Final = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    """Every string inside ``value`` with its path (``nodes[1]``, ``opts.mode``)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")


def _step_refs(ast: nodes.Template) -> set[str]:
    """Names used as ``steps.<name>`` or ``steps['<name>']``."""

    def is_steps(node: nodes.Expr) -> bool:
        return isinstance(node, nodes.Name) and node.name == "steps"

    out = {n.attr for n in ast.find_all(nodes.Getattr) if is_steps(n.node)}
    for item in ast.find_all(nodes.Getitem):
        if is_steps(item.node) and isinstance(item.arg, nodes.Const):
            out.add(str(item.arg.value))
    return out


def _template_problems(params: object, path: str, earlier: AbstractSet[object]) -> list[str]:
    out: list[str] = []
    for where, text in _strings(params, path):
        try:
            ast = _ENV.parse(text)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            out.append(
                f"{where}: template syntax error: {exc}" + (f" (line {line})" if line else "")
            )
            continue
        for ref in sorted(_step_refs(ast) - set(earlier)):
            out.append(f"{where}: refers to steps.{ref}, which is not an earlier step")
    return out


def _single_expression(ast: nodes.Template) -> nodes.Expr | None:
    """The expression when the template is exactly ``{{ expr }}``, else None."""
    if len(ast.body) == 1 and isinstance(ast.body[0], nodes.Output):
        parts = ast.body[0].nodes
        if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
            return parts[0]
    return None


def _reject_undefined(value: object) -> None:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, list | tuple):
        for v in value:
            _reject_undefined(v)
    elif isinstance(value, dict):
        for v in value.values():
            _reject_undefined(v)


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    ast = _ENV.parse(text)
    expr = _single_expression(ast)
    if expr is None:
        return _ENV.from_string(ast).render(context)
    body: list[nodes.Node] = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    evaluate = TemplateExpression(_ENV.from_string(nodes.Template(body, lineno=1)), False)
    value = evaluate(context)
    _reject_undefined(value)
    return copy.deepcopy(value)


def _render_value(value: Any, context: Mapping[str, Any], path: str, problems: list[str]) -> Any:
    if isinstance(value, str):
        try:
            return _render_string(value, context)
        # Template errors, and what an expression itself may raise (1/0, a bad filter argument).
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            problems.append(f"{path}: {exc}")
            return None
    if isinstance(value, list):
        return [_render_value(v, context, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render_value(v, context, f"{path}.{k}", problems) for k, v in value.items()}
    return value


def render(
    params: Mapping[str, Any], context: Mapping[str, Any], *, where: str, source: str = "runbook"
) -> dict[str, Any]:
    """Render ``params`` against ``context``; problems are reported as ``<where>.params.<key>``."""
    problems: list[str] = []
    out = {k: _render_value(v, context, f"{where}.params.{k}", problems) for k, v in params.items()}
    if problems:
        raise RunbookError(source, problems)
    return out


def render_params(
    step: Step, context: Mapping[str, Any], *, source: str = "runbook"
) -> dict[str, Any]:
    """The step's parameters rendered against ``context`` (see the module docstring)."""
    return render(step.params, context, where=step.name, source=source)


def render_compensation(
    step: Step, context: Mapping[str, Any], *, source: str = "runbook"
) -> dict[str, Any]:
    """The step's compensation parameters rendered against ``context``."""
    if step.compensate is None:
        raise ValueError(f"step {step.name} has no compensate block")
    return render(step.compensate.params, context, where=f"{step.name}.compensate", source=source)


def template_variables(runbook: Runbook) -> set[str]:
    """Top-level context names the runbook's templates use (``steps`` and ``run`` excluded):
    what a plan must provide."""
    found: set[str] = set()
    for step in runbook.steps:
        params: list[object] = [step.params, step.compensate.params if step.compensate else {}]
        for _, text in _strings(params, ""):
            found |= meta.find_undeclared_variables(_ENV.parse(text))
    return found - RESERVED_CONTEXT


# --- validation and loading -------------------------------------------------------------------


def _semantic_problems(data: Mapping[Any, Any], known: KnownActions) -> list[str]:
    """Checks that need ``known_actions`` or look across steps, on unvalidated data."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return []
    out: list[str] = []
    names = [s.get("name") if isinstance(s, dict) else None for s in steps]
    out += _duplicate_problems(names)
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict):
            continue
        earlier = set(names[:i])
        out += _action_problems(f"steps[{i}]", raw, known, earlier)
        problem = _compensate_problem(raw.get("on_failure", "abort"), "compensate" in raw)
        if problem:
            out.append(f"steps[{i}].{problem}")
        comp = raw.get("compensate")
        if isinstance(comp, dict):
            out += _action_problems(f"steps[{i}].compensate", comp, known, earlier)
    return out


def _action_problems(
    path: str, raw: Mapping[Any, Any], known: KnownActions, earlier: AbstractSet[object]
) -> list[str]:
    out: list[str] = []
    action, params = raw.get("action"), raw.get("params", {})
    allowed: AbstractSet[str] | None = None
    if isinstance(action, str):
        if action not in known:
            out.append(
                f"{path}.action: unknown action {action!r} (known: {', '.join(sorted(known))})"
            )
        else:
            allowed = known[action]
    if isinstance(params, dict):
        for key in params:
            if allowed is not None and key not in allowed:
                accepts = ", ".join(sorted(allowed)) or "no parameters"
                out.append(
                    f"{path}.params.{key}: unknown parameter for action {action} "
                    f"(accepts: {accepts})"
                )
        out += _template_problems(params, f"{path}.params", earlier)
    return out


def _name_steps(line: str, data: Mapping[Any, Any]) -> str:
    """``steps[2].timeout: ...`` -> ``steps[2] (promote).timeout: ...``; messages lower-cased."""
    steps = data.get("steps")
    m = re.match(r"^steps\[(\d+)\]", line)
    if m and isinstance(steps, list) and int(m.group(1)) < len(steps):
        raw = steps[int(m.group(1))]
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            line = f"{m.group(0)} ({name}){line[m.end() :]}"
    path, sep, msg = line.partition(": ")
    if sep and re.match(r"^[A-Z][a-z]", msg):
        msg = msg[0].lower() + msg[1:]
    return f"{path}{sep}{msg}"


def _step_index(line: str) -> int:
    m = re.match(r"^steps\[(\d+)\]", line)
    return int(m.group(1)) if m else -1


def parse_runbook(data: object, known_actions: KnownActions, source: str = "<runbook>") -> Runbook:
    """Validate already-parsed YAML data. Raises :class:`RunbookError` with every problem."""
    if not isinstance(data, dict):
        raise RunbookError(source, ["(top level): expected a mapping with name and steps"])
    problems: list[str] = []
    runbook: Runbook | None = None
    try:
        runbook = Runbook.model_validate(data)
    except ValidationError as exc:
        # A step-level check names its field first ("steps[3]: compensate: ..."): join them.
        problems += [
            re.sub(r"^(steps\[\d+\]): ([a-z_]+): ", r"\1.\2: ", p) for p in validation_messages(exc)
        ]
    problems += _semantic_problems(data, known_actions)
    lines = sorted(dict.fromkeys(_name_steps(p, data) for p in problems), key=_step_index)
    if lines or runbook is None:
        raise RunbookError(source, lines or ["(top level): invalid runbook"])
    return runbook


def load_runbook(path: str | Path, known_actions: KnownActions) -> Runbook:
    """Read and validate one YAML runbook. Raises :class:`RunbookError` on any problem."""
    return parse_runbook(read_yaml(path, RunbookError), known_actions, str(path))


def load_runbooks(directory: str | Path, known_actions: KnownActions) -> dict[str, Runbook]:
    """Every ``*.yaml`` runbook in ``directory``, by runbook name. Problems in any file are
    collected (prefixed with the file name) into one :class:`RunbookError`."""
    d = Path(directory)
    try:
        files = sorted(f for f in d.iterdir() if f.suffix == ".yaml" and f.is_file())
    except OSError as exc:
        raise RunbookError(str(d), [f"cannot read directory: {exc.strerror or exc}"]) from None
    out: dict[str, Runbook] = {}
    problems: list[str] = []
    for f in files:
        try:
            rb = load_runbook(f, known_actions)
        except RunbookError as exc:
            problems += [f"{f.name}: {p}" for p in exc.problems]
            continue
        if rb.name in out:
            problems.append(f"{f.name}: name: runbook {rb.name!r} is defined twice")
            continue
        out[rb.name] = rb
    if problems:
        raise RunbookError(str(d), problems)
    return out


# --- display ----------------------------------------------------------------------------------


def _secs(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _params_text(params: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in params.items()
    )


def describe(runbook: Runbook) -> list[str]:
    """Human-readable lines for ``runbook show``: one per step, plus its compensation."""
    lines = [
        f"{runbook.name}: {runbook.description.strip()}" if runbook.description else runbook.name
    ]
    for i, s in enumerate(runbook.steps, start=1):
        retry = (
            f"{s.retry.attempts} attempts (backoff {_secs(s.retry.backoff)}, "
            f"max {_secs(s.retry.max_delay)})"
            if s.retry.attempts > 1
            else "1 attempt"
        )
        gate = ", needs approval" if s.approval else ""
        lines.append(
            f"{i:>2}. {s.name}: {s.action} {_params_text(s.params)}".rstrip()
            + f"  [timeout {_secs(s.timeout)}, {retry}, on failure {s.on_failure}{gate}]"
        )
        if s.compensate is not None:
            comp = f"    compensate: {s.compensate.action} {_params_text(s.compensate.params)}"
            lines.append(comp.rstrip())
    return lines
