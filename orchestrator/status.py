"""The status document (``/v1/status``, ``orchestrator status``) and its table rendering.

Pure: builds plain JSON-able dicts from an assessment and its snapshot, and renders them.
The same document is served by the daemon and printed by the CLI, so both always agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.levels import Classification, describe
from orchestrator.model import Assessment, Snapshot, Topology

if TYPE_CHECKING:
    from orchestrator.incidents import Incident

STATUS_VERSION = 1


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_status(
    topo: Topology,
    assessment: Assessment,
    snap: Snapshot,
    source: str,
    priorities: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The status document. ``source`` says who judged: ``daemon`` or ``probe`` (one-shot)."""
    regions = []
    for region in topo.regions:
        rh = assessment.region(region)
        nodes = []
        for ref in topo.nodes_in(region):
            nh = assessment.node(ref.name)
            s = snap.sample(ref.name)
            obs = s.database if s else None
            db = obs.database if obs else None
            role = nh.role.value if obs and obs.ok else f"{nh.last_role.value}?"
            rpo_pct = (
                round(100.0 * nh.lag_seconds / topo.rpo, 1) if nh.lag_seconds is not None else None
            )
            nodes.append(
                {
                    "name": ref.name,
                    "role": role,
                    "verdict": nh.verdict.value,
                    "reason": nh.reason,
                    "since": _iso(nh.since),
                    "reachable": bool(obs and obs.ok),
                    "latency_ms": round(obs.latency * 1000, 2) if obs else None,
                    "error": obs.error if obs and not obs.ok else None,
                    "error_class": obs.error_class.value if obs and obs.error_class else None,
                    "timeline": db.timeline if db else None,
                    "wal_receiver": db.wal_receiver_status if db else None,
                    "replay_paused": db.replay_paused if db else None,
                    "lag_seconds": nh.lag_seconds,
                    "lag_bytes": nh.lag_bytes,
                    "rpo_used_pct": rpo_pct,
                    "http": (
                        {"ok": s.http.ok, "status": s.http.http_status, "error": s.http.error}
                        if s and s.http
                        else None
                    ),
                }
            )
        regions.append(
            {
                "name": region,
                "priority": (priorities or {}).get(region),
                "verdict": rh.verdict.value,
                "reason": rh.reason,
                "nodes": nodes,
            }
        )
    return {
        "version": STATUS_VERSION,
        "service": topo.service,
        "source": source,
        "cycle": assessment.cycle,
        "at": _iso(assessment.at),
        "objectives": {"rto_seconds": topo.rto, "rpo_seconds": topo.rpo},
        "primary": {"node": assessment.primary, "region": assessment.primary_region},
        "primary_loss_confirmed": assessment.primary_loss_confirmed,
        "reason": assessment.reason,
        "sentence": assessment.sentence,
        "regions": regions,
    }


def bcp_section(
    classification: Classification, incident: Incident | None = None, now: float | None = None
) -> dict[str, Any]:
    """The ``bcp`` section: the service's activation level and the open incident's."""

    out: dict[str, Any] = {
        "level": classification.level,
        "level_name": describe(classification.level),
        "authority": classification.authority,
        "reason": classification.reason,
        "sentence": classification.sentence,
        "incident": None,
    }
    if incident is not None and incident.is_open:
        out["incident"] = {
            "id": incident.id,
            "level": incident.level,
            "level_name": describe(incident.level),
            "status": incident.status,
            "opened_at": _iso(incident.opened_at),
            "elapsed_seconds": round((now or incident.opened_at) - incident.opened_at, 1),
        }
    return out


def _fmt(value: object, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


def render_table(doc: dict[str, Any]) -> str:
    """Human-readable table of a status document."""
    obj = doc["objectives"]
    primary = doc["primary"]
    head = [
        f"service {doc['service']}  (judged by {doc['source']}, cycle {doc['cycle']}, {doc['at']})",
        f"objectives: RTO {obj['rto_seconds']:g}s, RPO {obj['rpo_seconds']:g}s   "
        f"primary: {primary['node'] or '-'} ({primary['region'] or '-'})",
        f"{doc['reason']}: {doc['sentence']}",
    ]
    bcp = doc.get("bcp")
    if bcp:
        head.append(
            f"activation level: {bcp['level_name']}, authority {bcp['authority']}: "
            f"{bcp['sentence']}"
        )
        inc = bcp.get("incident")
        if inc:
            head.append(
                f"open incident {inc['id']}: {inc['level_name']}, {inc['status']}, "
                f"open for {inc['elapsed_seconds']:.0f}s (RTO {obj['rto_seconds']:g}s)"
            )
    drills = doc.get("drills")
    if drills and drills.get("last"):
        last = drills["last"]
        head.append(f"last drill {last['id']}: {last['result']} ({last.get('when') or '-'})")
    head.append("")
    cols = [
        "REGION",
        "VERDICT",
        "NODE",
        "ROLE",
        "NODE VERDICT",
        "LAG",
        "LAG BYTES",
        "RPO USED",
        "LATENCY",
        "DETAIL",
    ]
    rows: list[list[str]] = []
    for r in doc["regions"]:
        for i, n in enumerate(r["nodes"]):
            detail = n["error"] or ("" if n["reason"] == "OK" else n["reason"])
            rows.append(
                [
                    r["name"] if i == 0 else "",
                    r["verdict"].upper() if i == 0 else "",
                    n["name"],
                    n["role"],
                    n["verdict"].upper(),
                    _fmt(n["lag_seconds"], "s"),
                    _fmt(n["lag_bytes"]),
                    _fmt(n["rpo_used_pct"], "%"),
                    _fmt(n["latency_ms"], "ms"),
                    detail,
                ]
            )
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(head + lines) + "\n"
