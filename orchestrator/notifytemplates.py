"""Notification messages: the templates, their contexts and their rendering.

Guarantees:

* ``notifications.templates_dir`` overrides the shipped templates (``templates/notify``) file
  by file. Every template is compiled and rendered against sample incidents (each stage, a
  drill leg, the communication test, drill records) when :class:`Templates` is built: a broken
  one raises :class:`~orchestrator.errors.ConfigError` naming the file and line. Templates are
  read once, at construction (edits take effect on restart).
* :meth:`Templates.render` never raises: should a template still fail at run time, a plain
  message is rendered instead (and the failure logged).
* Templates run in jinja2's sandbox with undefined names as errors and no autoescaping (the
  messages are plain text).
* Drill messages (``drill=True``) start with ``[DRILL]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import structlog
from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from orchestrator import notifyplan
from orchestrator.config import Config
from orchestrator.errors import ConfigError
from orchestrator.incidents import Incident

log = structlog.get_logger("helios.notify")
DRILL_PREFIX: Final = "[DRILL] "
SHIPPED_TEMPLATES: Final = Path(__file__).with_name("templates") / "notify"
TEMPLATE_FILES: Final = {
    "internal": "internal.txt.j2",
    "customer": "customer.txt.j2",
    "test": "test.txt.j2",
    "drill_started": "drill_started.txt.j2",
    "drill_finished": "drill_finished.txt.j2",
}


# --- contexts ------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _common(cfg: Config, now: float) -> dict[str, Any]:
    return {
        "service": cfg.service,
        "service_title": cfg.notifications.service_title,
        "now": _iso(now),
    }


def incident_context(cfg: Config, inc: Incident, event: str, now: float) -> dict[str, Any]:
    """The context of the internal and customer templates for ``event`` about ``inc``
    (:func:`orchestrator.notifyplan.incident_context` with the config's settings)."""
    return notifyplan.incident_context(
        inc,
        event,
        service=cfg.service,
        settings=cfg.notifications,
        levels=cfg.levels,
        rto=cfg.objectives.rto,
        now=now,
    )


def drill_context(cfg: Config, event: str, record: Mapping[str, Any], now: float) -> dict[str, Any]:
    """The context of the ``drill_started`` / ``drill_finished`` templates."""
    return {**_common(cfg, now), "event": event, "prefix": DRILL_PREFIX, "drill": dict(record)}


def channel_test_context(cfg: Config, channel: str, kind: str, now: float) -> dict[str, Any]:
    """The context of the communication test's template, for one channel."""
    return {**_common(cfg, now), "event": "test", "channel": channel, "kind": kind}


# --- templates -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered message: ``title`` (one line: a template's ``{% set title %}``, else its
    subject or first line), ``text`` (all of it), ``body`` (``text`` without a leading
    ``Subject:`` line)."""

    title: str
    text: str
    body: str


class Templates:
    """The message templates: ``notifications.templates_dir`` first, then the shipped ones;
    compiled and checked against sample incidents at construction (see the module docstring)."""

    def __init__(self, cfg: Config) -> None:
        directory = cfg.notifications.templates_dir
        loaders = []
        if directory is not None:
            if not Path(directory).is_dir():
                raise ConfigError(directory, ["notifications.templates_dir: not a directory"])
            loaders.append(FileSystemLoader(directory))
        loaders.append(FileSystemLoader(SHIPPED_TEMPLATES))
        self._env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._compiled = {family: self._load(name) for family, name in TEMPLATE_FILES.items()}
        if directory is not None:
            for extra in sorted(Path(directory).glob("*.j2")):
                self._load(extra.name)
        for family, ctx in _samples(cfg):
            self._check(family, ctx)

    def _load(self, name: str) -> Template:
        try:
            return self._env.get_template(name)
        except TemplateSyntaxError as exc:
            where = exc.filename or name
            raise ConfigError(where, [f"line {exc.lineno}: {exc.message}"]) from None

    def _render(self, family: str, ctx: Mapping[str, Any]) -> Message:
        try:
            module = self._compiled[family].make_module(dict(ctx))
        except Exception:  # operator template code: re-raised with template file and line
            self._env.handle_exception()
        return _message(str(module), getattr(module, "title", None))

    def _check(self, family: str, ctx: Mapping[str, Any]) -> None:
        filename = self._compiled[family].filename or TEMPLATE_FILES[family]
        try:
            msg = self._render(family, ctx)
        except Exception as exc:  # operator template code: any error is a config problem
            where, line = _template_frame(exc, filename)
            raise ConfigError(where, [f"line {line}: {type(exc).__name__}: {exc}"]) from None
        if not msg.text:
            raise ConfigError(filename, ["the template renders an empty message"])

    def render(self, family: str, ctx: Mapping[str, Any], *, drill: bool) -> Message:
        """The message; never raises (a template failing at run time gives a plain message).
        ``drill``: the title and text start with ``[DRILL]``."""
        try:
            msg = self._render(family, ctx)
        except Exception as exc:  # operator template code: send a plain message instead
            log.error(
                f"template {TEMPLATE_FILES[family]} failed: {type(exc).__name__}: {exc}",
                reason="NOTIFY_TEMPLATE",
            )
            msg = _fallback(family, ctx)
        if not msg.text:
            msg = _fallback(family, ctx)
        return _with_drill_prefix(msg) if drill else msg


def _message(text: str, title: object) -> Message:
    text = text.strip()
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    subject = first.removeprefix("Subject:").strip() if first.startswith("Subject:") else None
    body = "\n".join(lines[1:]).strip() if subject is not None else text
    heading = str(title).strip() if isinstance(title, str) and title.strip() else None
    heading = heading or subject or first
    return Message(heading.splitlines()[0] if heading else "", text, body)


def _fallback(family: str, ctx: Mapping[str, Any]) -> Message:
    incident = ctx.get("incident")
    about = f" {incident['id']}" if isinstance(incident, dict) and "id" in incident else ""
    title = f"[{ctx.get('service', '?')}] {ctx.get('event', family)}{about}"
    text = f"{title}\n(the {TEMPLATE_FILES[family]} template failed; see the orchestrator log)"
    return Message(title, text, text)


def _with_drill_prefix(msg: Message) -> Message:
    def fix(text: str) -> str:
        return text if text.startswith("[DRILL]") else DRILL_PREFIX + text

    return Message(fix(msg.title), fix(msg.text), fix(msg.body))


def _template_frame(exc: BaseException, default: str) -> tuple[str, int | str]:
    """The template file and line where a rendering error was raised (from the traceback
    jinja2 rewrites to template lines)."""
    where: tuple[str, int | str] = (default, "?")
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            where = (name, tb.tb_lineno)
        tb = tb.tb_next
    return where


def _samples(cfg: Config) -> list[tuple[str, dict[str, Any]]]:
    """Contexts every template must render: incidents at each stage, a drill leg, the
    communication test and drill records."""
    now = 1_700_000_000.0
    region = cfg.ordered_regions()[0]

    def incident(**changes: Any) -> Incident:
        inc = Incident(
            id="inc-20231114T221000-sample",
            opened_at=now - 90,
            primary=region.nodes[0].name,
            region=region.name,
            level=2,
        )
        inc.set_level(2, now - 80, "sample", cfg.levels.policy(2).authority)
        inc.event("first_failure", now - 90)
        for key, value in changes.items():
            setattr(inc, key, value)
        return inc

    held = incident(status="held")
    held.event("confirmed", now - 80, "3 failed probes")
    held.event("hold", now - 70, "no safe candidate")
    failed_over = incident(status="failed_over", new_primary="replica-1", closed_at=now)
    failed_over.rpo_seconds, failed_over.rpo_bytes = 0.4, 1024
    failed_over.notes.append("sample note")
    for name in ("confirmed", "fenced", "promoted", "dns_switched", "first_verified_write"):
        failed_over.event(name, now - 60)
    resolved = incident(status="recovered", closed_at=now)
    resolved.event("recovered", now - 30)
    resolved.event("resolved", now)
    cases = [
        (incident(), "opened"),
        (held, "acknowledged"),
        (failed_over, "status_changed"),
        (resolved, "resolved"),
        (incident(drill_id="drill-sample"), "update"),
    ]
    out: list[tuple[str, dict[str, Any]]] = []
    for inc, event in cases:
        ctx = incident_context(cfg, inc, event, now)
        out += [("internal", ctx), ("customer", ctx)]
    out.append(("test", channel_test_context(cfg, "sample", "slack", now)))
    leg = {"name": f"{region.name} -> ?", "passed": True, "rto_seconds": 4.2, "rpo_seconds": 0}
    drills: list[dict[str, Any]] = [
        {},
        {"id": "drill-sample", "kind": "switchover", "trigger": "manual", "legs": [leg]},
        {"id": "drill-sample", "result": "passed", "legs": [leg, {"name": "planned"}]},
        {"id": "drill-sample", "result": "failed", "reasons": ["sample"], "legs": [{}]},
    ]
    for record in drills:
        for event in notifyplan.DRILL_EVENTS:
            out.append((event, drill_context(cfg, event, record, now)))
    return out
