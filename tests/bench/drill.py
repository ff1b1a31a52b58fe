"""The monthly DR drill on real sandboxes (``make bench`` part ``drill``).

Every run gets a fresh sandbox (own /tmp directory, own 16-port block, destroyed afterwards) and
runs one drill the way ``orchestrator drill`` does (:mod:`orchestrator.cli_drill`): a
:class:`~orchestrator.cli_drill.TickAssessor` ticking like the daemon at the default probe
settings, a :class:`~orchestrator.failover.FailoverService` with the DNS switcher, and
``DrillRunner(cfg, service, assess, trigger="manual").run(kind, None, True, False)``: the best
candidate (``us-west``), with failback. No daemon runs meanwhile.

* ``switchover``: leg 1 switches the primary over to ``us-west``, leg 2 back to ``us-east``.
* ``failover``: leg 1 runs the sandbox config's ``drill.failure_command`` (SIGKILL of the
  primary's postmaster), waits until the loss is confirmed, fails over to ``us-west`` and
  rejoins the old primary as a replica; leg 2 switches back to ``us-east``.

Measured from the drill's own record: per leg RTO, RPO, write unavailability, lost and
acknowledged commits, the runbook steps' durations, whether it passed; per drill its duration
and result.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from orchestrator.cli_drill import TickAssessor, open_switcher_or_none
from orchestrator.drill import DrillRunner
from orchestrator.errors import HeliosError
from orchestrator.failover import FailoverService
from orchestrator.sandbox import Sandbox
from tests.bench.common import (
    FAILURE_THRESHOLD,
    INTERVAL,
    PRIMARY_REGION,
    REASONS,
    Dist,
    bench_config,
    progress,
    sandbox_in_tmp,
    sec,
)

RUNS = 3
KINDS = ("switchover", "failover")
RTO_OBJECTIVE = 300.0
RPO_OBJECTIVE = 60.0
"""The objectives of the sandbox's generated config (the drill judges against the config's)."""

NEW_REGION = "us-west"


# --- one drill -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    position: int
    """1 = out of us-east, 2 = the failback."""
    name: str
    kind: str
    """``failover`` for the first leg of a failover drill, else ``switchover``."""
    passed: bool
    rto: float | None
    rpo: float | None
    unavailability: float | None
    lost: int | None
    acked: int | None
    seconds: float
    """Leg start -> leg end (the drill's wall clock)."""
    before_run: float
    """Leg start -> first runbook step (plan; for a failover also the failure command and the
    wait until the loss is confirmed). The leg ends when its run ends; the DNS verification,
    smoke checks and lost-commit count follow it (outside the leg)."""
    steps: dict[str, float]
    """Runbook step -> seconds (journal times, first start to last end), in run order."""
    failed_steps: tuple[str, ...]
    dns_ok: bool
    smoke_ok: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DrillRun:
    kind: str
    index: int
    result: str
    reasons: tuple[str, ...]
    seconds: float
    """The drill's duration (record ``started_at`` -> ``finished_at``)."""
    prechecks: float
    """Drill start -> first leg (warm-up ticks, pre-checks, plan, lock, write-load warm-up)."""
    between: float
    """End of leg 1 -> start of leg 2: leg 1's DNS verification, smoke checks and lost-commit
    count, for a failover the old primary's rejoin, then settling."""
    final: float
    """End of the last leg -> drill end: the same checks of that leg, settling, load stop."""
    rto_objective: float
    rpo_objective: float
    load_rate: float
    load_acked: int
    load_errors: int
    legs: tuple[Leg, ...]
    roles_after: dict[str, str]
    service_after: str
    """The region the service name resolves to after the drill."""
    logged: dict[str, int]
    """Reason codes of the warnings and errors logged during the drill."""
    notes: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.result == "passed"


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _span(start: Any, end: Any) -> float:
    return math.nan if start is None or end is None else float(end) - float(start)


def _leg(position: int, kind: str, leg: dict[str, Any]) -> Leg:
    phases = leg.get("phases") or []
    steps = {str(p["name"]): _span(p.get("started_at"), p.get("finished_at")) for p in phases}
    first = phases[0].get("started_at") if phases else None
    return Leg(
        position=position,
        name=str(leg.get("name", "?")),
        kind=kind if position == 1 else "switchover",
        passed=bool(leg.get("passed")),
        rto=_f(leg.get("rto_seconds")),
        rpo=_f(leg.get("rpo_seconds")),
        unavailability=_f(leg.get("write_unavailable_seconds")),
        lost=leg.get("lost_commits"),
        acked=leg.get("acked_commits"),
        seconds=_span(leg.get("started_at"), leg.get("finished_at")),
        before_run=_span(leg.get("started_at"), first),
        steps=steps,
        failed_steps=tuple(str(p["name"]) for p in phases if p.get("status") != "ok"),
        dns_ok=all(d.get("ok") for d in leg.get("dns") or []),
        smoke_ok=all(c.get("ok") for c in leg.get("smoke") or []),
        reasons=tuple(str(r) for r in leg.get("reasons") or []),
    )


def _region_of(sb: Sandbox, address: str) -> str:
    return next((r for r in sb.REGIONS if sb.host(r) == address), address)


def after_state(sb: Sandbox) -> tuple[dict[str, str], str]:
    """Each region's role, and the region the service name resolves to."""
    roles = {r.region: r.role for r in sb.status().regions}
    try:
        service = _region_of(sb, sb.resolve_service())
    except HeliosError as exc:
        service = f"unresolved ({exc})"
    return roles, service


async def drill_trial(sb: Sandbox, kind: str, index: int) -> DrillRun:
    """One drill, as ``orchestrator drill --kind KIND --failback`` runs it (no notifier: the
    runbooks' ``notify`` step sends nothing)."""
    cfg = bench_config(sb)
    t0 = time.monotonic()
    assessor = TickAssessor(cfg)
    try:
        async with open_switcher_or_none(cfg) as switcher:
            service = FailoverService(cfg, switcher)
            try:
                runner = DrillRunner(cfg, service, assessor, trigger="manual")
                record = await runner.run(kind, None, True, False)
            finally:
                await service.aclose()
    finally:
        await assessor.aclose()
    logged = REASONS.between(t0, time.monotonic())
    roles, service_region = await asyncio.to_thread(after_state, sb)
    legs = tuple(_leg(i + 1, kind, leg) for i, leg in enumerate(record.get("legs") or []))
    raw = record.get("legs") or []
    started, finished = record.get("started_at"), record.get("finished_at")
    notes: list[str] = []
    if roles.get(PRIMARY_REGION) != "primary":
        notes.append(f"afterwards {PRIMARY_REGION} is {roles.get(PRIMARY_REGION)} (roles {roles})")
    if service_region != PRIMARY_REGION:
        notes.append(f"afterwards the service name resolves to {service_region}")
    objectives = record.get("objectives") or {}
    load = record.get("load") or {}
    return DrillRun(
        kind=kind,
        index=index + 1,
        result=str(record.get("result")),
        reasons=tuple(str(r) for r in record.get("reasons") or []),
        seconds=_span(started, finished),
        prechecks=_span(started, raw[0].get("started_at")) if raw else math.nan,
        between=(
            _span(raw[0].get("finished_at"), raw[1].get("started_at")) if len(raw) > 1 else math.nan
        ),
        final=_span(raw[-1].get("finished_at"), finished) if raw else math.nan,
        rto_objective=float(objectives.get("rto_seconds", RTO_OBJECTIVE)),
        rpo_objective=float(objectives.get("rpo_seconds", RPO_OBJECTIVE)),
        load_rate=float(load.get("rate", math.nan)),
        load_acked=int(load.get("acked", 0)),
        load_errors=int(load.get("errors", 0)),
        legs=legs,
        roles_after=roles,
        service_after=service_region,
        logged=logged,
        notes=tuple(notes),
    )


# --- the series ------------------------------------------------------------------------------


@dataclass
class DrillSeries:
    kind: str  # "switchover" | "failover"
    runs: list[DrillRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    setup: dict[str, str] = field(default_factory=dict)
    """The drill section of the configuration the runs used (for the report)."""


def describe_setup(sb: Sandbox) -> dict[str, str]:
    d = bench_config(sb).drill
    return {
        "rate": f"{d.write_load.rate:g}",
        "write_timeout": f"{d.write_load.timeout:g}",
        "settle": f"{d.settle:g}",
        "max_duration": f"{d.max_duration:g}",
        "failure_command": " ".join(d.failure_command or [])
        .replace(sys.executable, "python")
        .replace(str(sb.state_dir), "<sandbox>"),
        "smoke": ", ".join(f"`{c.name}` ({c.kind})" for c in d.smoke_checks) or "none",
    }


def run_series(kind: str, runs: int = RUNS) -> DrillSeries:
    """``runs`` drills of one kind (with failback), each on a fresh sandbox. A run that fails
    is recorded (with its error) and the series goes on; Ctrl-C stops everything."""
    series = DrillSeries(kind)
    started = time.monotonic()
    for i in range(runs):
        label = f"drill {kind} #{i + 1}: "
        try:
            with sandbox_in_tmp(label) as sb:
                if not series.setup:
                    series.setup = describe_setup(sb)
                r = asyncio.run(drill_trial(sb, kind, i))
            series.runs.append(r)
            progress(
                f"{label}{r.result.upper()} in {r.seconds:.1f}s; "
                + "; ".join(
                    f"{leg.name}: RTO {_opt(leg.rto)}, RPO {_opt(leg.rpo)}, writes unavailable "
                    f"{_opt(leg.unavailability)}, lost {leg.lost} of {leg.acked}"
                    for leg in r.legs
                )
            )
        except (HeliosError, RuntimeError, TimeoutError, OSError, psycopg.Error) as exc:
            progress(f"{label}FAILED: {exc!r}")
            series.errors.append(f"run {i + 1}: {type(exc).__name__}: {exc}")
    series.seconds = time.monotonic() - started
    return series


# --- the report ------------------------------------------------------------------------------


def _vals(values: list[float | None]) -> tuple[float, ...]:
    return tuple(v for v in values if v is not None and not math.isnan(v))


def _med(values: list[float | None]) -> float:
    return Dist(_vals(values)).median


def _mmm(values: list[float | None], digits: int = 2) -> str:
    d = Dist(_vals(values))
    if not d.n:
        return "n/a"
    return f"{sec(d.min, digits)} / **{sec(d.median, digits)}** / {sec(d.max, digits)}"


def _opt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f} s"


def _legs_at(runs: list[DrillRun], position: int) -> list[Leg]:
    return [leg for r in runs for leg in r.legs if leg.position == position]


def _columns(drills: dict[str, DrillSeries]) -> list[tuple[str, list[Leg]]]:
    """(label, legs) for each kind and leg position that has data."""
    out = []
    for kind, s in drills.items():
        for position in (1, 2):
            legs = _legs_at(s.runs, position)
            if legs:
                how = ": failover" if legs[0].kind == "failover" else ""
                out.append((f"{kind} drill, leg {position}{how} `{legs[0].name}`", legs))
    return out


def _objectives(drills: dict[str, DrillSeries]) -> tuple[float, float]:
    runs = [r for s in drills.values() for r in s.runs]
    if not runs:
        return RTO_OBJECTIVE, RPO_OBJECTIVE
    return runs[0].rto_objective, runs[0].rpo_objective


def _step_medians(legs: list[Leg]) -> dict[str, float]:
    """Runbook step -> median seconds over the legs, in the order the steps ran."""
    names: list[str] = []
    for leg in legs:
        names.extend(n for n in leg.steps if n not in names)
    return {n: _med([leg.steps.get(n) for leg in legs]) for n in names}


def _dominant(legs: list[Leg], top: int = 2) -> str:
    steps = _step_medians(legs)
    total = _med([leg.seconds for leg in legs])
    ranked = sorted(
        ((v, n) for n, v in steps.items() if not math.isnan(v)), key=lambda x: x[0], reverse=True
    )[:top]
    if not ranked or math.isnan(total) or total <= 0:
        return "n/a"
    return ", ".join(f"`{n}` {sec(v)} ({v / total:.0%} of the leg)" for v, n in ranked)


def render_section(drills: dict[str, DrillSeries]) -> list[str]:
    lines: list[str] = []
    add = lines.append
    rto_obj, rpo_obj = _objectives(drills)
    setup = next((s.setup for s in drills.values() if s.setup), {})
    add("## 5. DR drills (`orchestrator drill`)")
    add("")
    add(
        f"Each drill runs on a **fresh sandbox** (own /tmp directory and 16-port block, "
        "destroyed afterwards) the way `orchestrator drill --failback` runs it: "
        '`DrillRunner(cfg, FailoverService(cfg, <DNS switcher>), TickAssessor(cfg), trigger="'
        'manual").run(kind, None, True, False)`, i.e. to the best candidate (`us-west`) and '
        "back. No daemon runs: the drill's `TickAssessor` probes and judges like the daemon at "
        f"the default probe settings (interval {INTERVAL:g} s, failure threshold "
        f"{FAILURE_THRESHOLD}; three warm-up ticks, then one tick per interval). The sandbox's "
        "generated drill section: a write load of "
        f"{setup.get('rate', '?')} commits/s through the service name (resolved through the "
        "sandbox's name servers before every reconnection, "
        f"{setup.get('write_timeout', '?')} s per write), smoke checks "
        f"{setup.get('smoke', '?')}, settle bound {setup.get('settle', '?')} s, max duration "
        f"{setup.get('max_duration', '?')} s; DNS on the Route53, Cloudflare and Google Cloud "
        "DNS stand-ins. No notifier is configured for the runs (the runbooks' `notify` step "
        "sends nothing). A **switchover drill** switches over to `us-west` "
        "(leg 1) and back (leg 2); a **failover drill** runs `drill.failure_command` "
        f"(`{setup.get('failure_command', '?')}`, SIGKILL of the primary's postmaster), waits "
        "until the loss is confirmed, runs the failover runbook to `us-west`, rejoins the old "
        "primary as a replica (leg 1) and switches back (leg 2)."
    )
    add("")
    add(
        "All figures come from the drill's record. **RTO**: leg start (switchover) or the "
        "injected failure as the client saw it (failover) -> first verified write through the "
        "service name. **RPO**: the data-loss window, from the oldest acknowledged commit "
        "missing on the new primary to the failure (0 when nothing acknowledged was lost). "
        "**Write unavailability**: the longest gap between two acknowledged writes of the "
        f"drill's load overlapping the leg (resolution about {1 / float(setup.get('rate', 20)):.2f}"
        " s at that rate). **Lost / acked**: acknowledged commits missing on the new primary / "
        "commits acknowledged during the leg."
    )
    add("")
    add(
        f"Objectives (from the configuration; the drill judges each leg against them): "
        f"**RTO {rto_obj:g} s, RPO {rpo_obj:g} s**."
    )
    add("")
    if any(r.legs for s in drills.values() for r in s.runs):
        lines.extend(_render_legs(drills, rto_obj, rpo_obj))
    else:
        add("No drill completed a leg.")
        add("")
    add(
        "The whole drill (medians of its parts). Pre-checks: the three warm-up ticks, the "
        "pre-checks and the first leg's plan, the drill lock and the write load's warm-up. A leg "
        "ends when its runbook run ends; between the legs: leg 1's DNS verification (API and "
        "name servers of every provider), smoke checks and lost-commit count, after a failover "
        "the old primary's rejoin as a replica, then waiting until every node is healthy; the "
        "final settle: the same for leg 2, the load's stop and the record."
    )
    add("")
    add(
        "| drill | runs ok | passed | duration min / **median** / max | pre-checks | leg 1 | "
        "between legs | leg 2 | final settle |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for kind, s in drills.items():
        runs = s.runs
        add(
            f"| {kind} | {len(runs)}/{len(runs) + len(s.errors)} | "
            f"{sum(1 for r in runs if r.passed)}/{len(runs)} | "
            f"{_mmm([r.seconds for r in runs], 1)} | {sec(_med([r.prechecks for r in runs]))} | "
            f"{sec(_med([leg.seconds for leg in _legs_at(runs, 1)]))} | "
            f"{sec(_med([r.between for r in runs]))} | "
            f"{sec(_med([leg.seconds for leg in _legs_at(runs, 2)]))} | "
            f"{sec(_med([r.final for r in runs]))} |"
        )
    add("")
    for kind, s in drills.items():
        add(
            f"{kind.capitalize()} drills: {len(s.runs)} of {len(s.runs) + len(s.errors)} runs "
            f"completed ({s.seconds:.0f} s for the series, sandbox creation included)."
            + (" Failed runs: " + "; ".join(s.errors) if s.errors else "")
        )
    add("")
    runs_all = [r for s in drills.values() for r in s.runs]
    if not runs_all:
        return lines
    add("Per run:")
    add("")
    add(
        "| drill | # | result | duration | leg | RTO | RPO | write unavailability | "
        "lost / acked | DNS | smoke | leg passed |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs_all:
        for leg in r.legs or ():
            add(
                f"| {r.kind} | {r.index} | {r.result} | {sec(r.seconds, 1)} | {leg.position}: "
                f"`{leg.name}` | {_opt(leg.rto)} | {_opt(leg.rpo)} | "
                f"{_opt(leg.unavailability, 3)} | {leg.lost} / {leg.acked} | "
                f"{'ok' if leg.dns_ok else '**FAIL**'} | {'ok' if leg.smoke_ok else '**FAIL**'} | "
                f"{'yes' if leg.passed else '**no**'} |"
            )
        if not r.legs:
            add(
                f"| {r.kind} | {r.index} | {r.result} | {sec(r.seconds, 1)} | (no leg) | | | | | "
                "| | |"
            )
    add("")
    logged: dict[str, int] = {}
    for r in runs_all:
        for k, v in r.logged.items():
            logged[k] = logged.get(k, 0) + v
    add(
        "Write load per drill (median): "
        f"{_med([float(r.load_acked) for r in runs_all]):.0f} acknowledged commits, "
        f"{_med([float(r.load_errors) for r in runs_all]):.0f} failed attempts. Warnings and "
        "errors logged during the drills (reason codes, all runs): "
        + (", ".join(f"`{k}` x {v}" for k, v in sorted(logged.items())) or "none")
        + ". Afterwards the primary was back in `us-east` and the service name resolved to it "
        f"in {sum(1 for r in runs_all if not r.notes)} of {len(runs_all)} runs."
    )
    notes = [f"{r.kind} #{r.index}: {x}" for r in runs_all for x in _reasons(r)]
    if notes:
        add("Reasons and notes: " + "; ".join(notes) + ".")
    add("")
    lines.extend(_render_steps(drills))
    lines.extend(_analysis(drills))
    return lines


def _render_legs(drills: dict[str, DrillSeries], rto_obj: float, rpo_obj: float) -> list[str]:
    lines: list[str] = []
    add = lines.append
    add(
        "| drill | leg | legs passed | RTO min / **median** / max | RTO objective | "
        "RPO median / max | RPO objective | write unavailability min / **median** / max | "
        "lost / acked (total) |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for kind, s in drills.items():
        for position in (1, 2):
            legs = _legs_at(s.runs, position)
            if not legs:
                continue
            rto = Dist(_vals([leg.rto for leg in legs]))
            rpo = Dist(_vals([leg.rpo for leg in legs]))
            lost = sum(leg.lost or 0 for leg in legs)
            acked = sum(leg.acked or 0 for leg in legs)
            add(
                f"| {kind} | {position}: {legs[0].kind} `{legs[0].name}` | "
                f"{sum(1 for leg in legs if leg.passed)}/{len(legs)} | "
                f"{_mmm([leg.rto for leg in legs])} | <= {rto_obj:g} s: "
                f"{_met(rto.max, rto_obj, rto.n == len(legs))} | {sec(rpo.median)} / "
                f"{sec(rpo.max)} | <= {rpo_obj:g} s: {_met(rpo.max, rpo_obj, rpo.n == len(legs))}"
                f" | {_mmm([leg.unavailability for leg in legs], 3)} | {lost} / {acked} |"
            )
    add("")
    return lines


def _reasons(r: DrillRun) -> list[str]:
    """The drill's reasons, its legs' reasons not already among them, and the notes."""
    out = list(r.reasons)
    out += [x for leg in r.legs for y in leg.reasons if (x := f"{leg.name}: {y}") not in out]
    return out + list(r.notes)


def _met(worst: float, objective: float, complete: bool) -> str:
    if math.isnan(worst):
        return "no data"
    if worst > objective:
        return "**missed**"
    return "met" if complete else "met where measured"


def _render_steps(drills: dict[str, DrillSeries]) -> list[str]:
    cols = _columns(drills)
    if not cols:
        return []
    lines: list[str] = []
    add = lines.append
    add(
        "Where each leg's time goes (median seconds per runbook step, from the journal times in "
        "the record; the largest step of each leg in bold):"
    )
    add("")
    add("| step | " + " | ".join(f"{label}" for label, _ in cols) + " |")
    add("|---|" + "---|" * len(cols))
    medians = [_step_medians(legs) for _, legs in cols]
    names: list[str] = []
    for m in medians:
        names.extend(n for n in m if n not in names)
    add(
        "| leg start -> first step (plan; failover: failure command, loss confirmation) | "
        + " | ".join(sec(_med([leg.before_run for leg in legs])) for _, legs in cols)
        + " |"
    )
    for n in names:
        cells = []
        for m in medians:
            v = m.get(n, math.nan)
            top = max((x for x in m.values() if not math.isnan(x)), default=math.nan)
            cells.append("-" if n not in m else (f"**{sec(v)}**" if v == top else sec(v)))
        add(f"| `{n}` | " + " | ".join(cells) + " |")
    add(
        "| **leg** | "
        + " | ".join(f"**{sec(_med([leg.seconds for leg in legs]))}**" for _, legs in cols)
        + " |"
    )
    add("")
    return lines


def _daemon_detection_floor() -> float:
    """The least time after a failure before the daemon judges the primary DOWN: the first
    failed probe plus ``failure_threshold - 1`` more, one interval apart."""
    return (FAILURE_THRESHOLD - 1) * INTERVAL


def _leg_text(legs: list[Leg], rto_obj: float, rpo_obj: float) -> str:
    rto = Dist(_vals([leg.rto for leg in legs]))
    rpo = Dist(_vals([leg.rpo for leg in legs]))
    lost = sum(leg.lost or 0 for leg in legs)
    rto_text = (
        "RTO n/a"
        if not rto.n
        else f"RTO median {sec(rto.median)} (max {sec(rto.max)}, "
        + (
            f"{rto.max / rto_obj:.1%} of the {rto_obj:g} s objective)"
            if rto.max <= rto_obj
            else f"**above the {rto_obj:g} s objective**)"
        )
    )
    rpo_text = (
        "RPO n/a"
        if not rpo.n
        else f"RPO at most {sec(rpo.max)} (objective {rpo_obj:g} s"
        + (": **missed**)" if rpo.max > rpo_obj else ")")
    )
    before = _med([leg.before_run for leg in legs])
    pre = (
        f"; before the first step (failure command, loss confirmation, plan) {sec(before)}"
        if legs[0].kind == "failover"
        else ""
    )
    return (
        f"leg {legs[0].position} ({legs[0].kind} `{legs[0].name}`): {rto_text}; {rpo_text}; "
        f"{lost} acknowledged commit(s) lost; write unavailability median "
        f"{sec(_med([leg.unavailability for leg in legs]), 3)}; longest steps "
        f"{_dominant(legs)}{pre}"
    )


def _rejoin_in_rto(drills: dict[str, DrillSeries]) -> str | None:
    """Switchover legs: the share of the RTO that is the old primary's rejoin, when the
    runbook runs ``rejoin`` before ``verify_write`` (where the RTO ends)."""
    legs = [
        leg
        for s in drills.values()
        for r in s.runs
        for leg in r.legs
        if leg.kind == "switchover" and "rejoin" in leg.steps and "verify_write" in leg.steps
    ]
    if not legs:
        return None
    order = list(legs[0].steps)
    if order.index("rejoin") > order.index("verify_write"):
        return None
    rto = _med([leg.rto for leg in legs])
    rejoin = _med([leg.steps["rejoin"] for leg in legs])
    unavailable = _med([leg.unavailability for leg in legs])
    return (
        f"- Switchover legs ({len(legs)}): the RTO ends at the first verified write, and the "
        "switchover runbook runs `verify_write` after `rejoin` (the old primary rewound and "
        f"restarted as a replica): of the median RTO {sec(rto)}, `rejoin` is {sec(rejoin)} "
        f"({rejoin / rto:.0%}), while the drill's client found writes unavailable for "
        f"{sec(unavailable, 3)} (median; writes resume once `switch_dns` is served). The "
        "switchover RTO measures the whole runbook, not the outage clients see."
        if rto > 0
        else ""
    )


def _failover_detection(drills: dict[str, DrillSeries]) -> str | None:
    legs = [
        leg for s in drills.values() for r in s.runs for leg in r.legs if leg.kind == "failover"
    ]
    rto = Dist(_vals([leg.rto for leg in legs]))
    if not rto.n:
        return None
    floor = _daemon_detection_floor()
    below = sum(1 for v in rto.values if v < floor)
    return (
        "- Failover leg and detection: like the daemon, the drill fails over only once the "
        f"primary is DOWN ({FAILURE_THRESHOLD} consecutive failed probes {INTERVAL:g} s apart, "
        f"i.e. at least {floor:g} s after the failure) and the replicas confirm the loss. The "
        f"failover leg's RTO was {sec(rto.min)} - {sec(rto.max)} (median {sec(rto.median)})"
        + (
            f"; {below} of {rto.n} runs were below that {floor:g} s floor, which a real "
            "detection cannot be: check the drill's loss judgement"
            if below
            else ", detection included, comparable with the daemon's failover in section 4"
        )
        + "."
    )


def _analysis(drills: dict[str, DrillSeries]) -> list[str]:
    out: list[str] = []
    rto_obj, rpo_obj = _objectives(drills)
    for kind, s in drills.items():
        runs = s.runs
        if not runs:
            continue
        parts = [
            _leg_text(legs, rto_obj, rpo_obj)
            for legs in (_legs_at(runs, 1), _legs_at(runs, 2))
            if legs
        ]
        pieces = {
            "the pre-checks": _med([r.prechecks for r in runs]),
            "leg 1": _med([leg.seconds for leg in _legs_at(runs, 1)]),
            "between the legs": _med([r.between for r in runs]),
            "leg 2": _med([leg.seconds for leg in _legs_at(runs, 2)]),
            "the final settle": _med([r.final for r in runs]),
        }
        biggest = max(
            ((v, k) for k, v in pieces.items() if not math.isnan(v)), default=(math.nan, "")
        )
        out.append(
            f"- {kind.capitalize()} drill: {sum(1 for r in runs if r.passed)} of {len(runs)} "
            f"passed; median duration {sec(_med([r.seconds for r in runs]), 1)}, its largest "
            f"part {biggest[1]} ({sec(biggest[0])}). " + "; ".join(parts) + "."
        )
    for extra in (_rejoin_in_rto(drills), _failover_detection(drills)):
        if extra:
            out.append(extra)
    legs = [leg for s in drills.values() for r in s.runs for leg in r.legs]
    if legs:
        rto = Dist(_vals([leg.rto for leg in legs]))
        rpo = Dist(_vals([leg.rpo for leg in legs]))
        missing = sum(1 for leg in legs if leg.rto is None or leg.rpo is None)
        out.append(
            f"- Against the objectives: the worst RTO of any leg is {sec(rto.max)}, "
            + (
                f"{rto.max / rto_obj:.1%} of the {rto_obj:g} s objective (met with "
                f"{sec(rto_obj - rto.max, 1)} to spare)"
                if rto.n and rto.max <= rto_obj
                else f"**above the {rto_obj:g} s objective**"
                if rto.n
                else "not measured"
            )
            + f"; the worst RPO is {sec(rpo.max)} against {rpo_obj:g} s"
            + (" (**missed**)" if rpo.n and rpo.max > rpo_obj else " (met)" if rpo.n else "")
            + (f"; {missing} leg(s) without an RTO or RPO" if missing else "")
            + ". What the objectives leave on top of the sandbox's figures is the budget for "
            "what the sandbox does not have: DNS caches honouring the record's TTL, slower "
            "hosts and networks, people."
        )
    if not out:
        return []
    return ["### Analysis (drills)", "", *out, ""]


def findings(drills: dict[str, DrillSeries]) -> list[str]:
    """Failed or aborted drills, objectives missed, anomalies of section 5 (never hidden)."""
    out: list[str] = []
    for kind, s in drills.items():
        name = f"drill {kind}"
        out.extend(f"{name}: {e}" for e in s.errors)
        for r in s.runs:
            tag = f"{name} #{r.index}"
            if not r.passed:
                out.append(
                    f"{tag}: drill {r.result}"
                    + (": " + "; ".join(r.reasons) if r.reasons else "")
                    + "."
                )
            if len(r.legs) != 2:
                out.append(f"{tag}: {len(r.legs)} leg(s) instead of 2 (with failback).")
            for leg in r.legs:
                lt = f"{tag} leg {leg.position} (`{leg.name}`)"
                if leg.rto is None:
                    out.append(f"{lt}: no RTO measured.")
                elif leg.rto > r.rto_objective:
                    out.append(
                        f"{lt}: RTO {sec(leg.rto)} above the {r.rto_objective:g} s objective."
                    )
                if leg.rpo is None:
                    out.append(f"{lt}: no RPO measured.")
                elif leg.rpo > r.rpo_objective:
                    out.append(
                        f"{lt}: RPO {sec(leg.rpo)} above the {r.rpo_objective:g} s objective."
                    )
                if leg.kind == "switchover" and leg.lost:
                    out.append(
                        f"{lt}: {leg.lost} acknowledged commit(s) lost in a planned switchover."
                    )
                if leg.failed_steps:
                    out.append(f"{lt}: step(s) not ok: {', '.join(leg.failed_steps)}.")
            out.extend(f"{tag}: {n}" for n in r.notes)
        floor = _daemon_detection_floor()
        fast = [
            leg.rto
            for r in s.runs
            for leg in r.legs
            if leg.kind == "failover" and leg.rto is not None and leg.rto < floor
        ]
        if fast:
            out.append(
                f"{name}: the failover leg's RTO ({', '.join(sec(v) for v in fast)}) is below "
                f"the {floor:g} s the daemon needs just to judge the primary DOWN "
                f"({FAILURE_THRESHOLD} failed probes {INTERVAL:g} s apart): the drill did not "
                "wait for the daemon's judgement, so its failover RTO understates a real one "
                "(see the analysis in section 5)."
            )
        if len(s.runs) + len(s.errors) < RUNS:
            out.append(
                f"{name}: only {len(s.runs) + len(s.errors)} run(s) (fewer than the {RUNS} "
                "of a full benchmark)."
            )
    return out
