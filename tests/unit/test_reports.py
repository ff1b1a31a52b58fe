"""Incident and drill reports: documents, checklist ticking, rendering, files and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from test_incidents_controls import write_config

from orchestrator import drillreport, reports
from orchestrator import reportmodel as rm
from orchestrator.cli import main
from orchestrator.errors import HeliosError, UsageError
from orchestrator.journal import Journal

T0 = 1_795_813_534.0
HOSTILE = "</script><script>document.body.dataset.pwned='1'</script><img src=x onerror=alert(1)>"

APPENDIX_C = [
    (
        "Initial Response",
        [
            "Incident confirmed",
            "BCP team notified",
            "Impact assessed",
            "Level determined",
            "Procedures initiated",
        ],
    ),
    (
        "During Incident",
        [
            "Regular status updates",
            "Customer communication",
            "Resource coordination",
            "Documentation maintained",
        ],
    ),
    (
        "Recovery",
        [
            "Services restored",
            "Verification complete",
            "Stakeholders notified",
            "Normal operations resumed",
        ],
    ),
    (
        "Post-Incident",
        [
            "Lessons learned meeting",
            "Plan updates identified",
            "Documentation updated",
            "Training needs assessed",
        ],
    ),
]


def note(at: float, event: str, audience: str, ok: bool = True, **kw: Any) -> dict[str, Any]:
    return {
        "at": T0 + at,
        "event": event,
        "audience": audience,
        "channel": kw.get("channel", "slack"),
        "ok": ok,
        "via": kw.get("via", kw.get("channel", "slack")),
        "detail": kw.get("detail", ""),
    }


def incident(**changes: Any) -> dict[str, Any]:
    """A failed-over incident: RTO 36 s (12% of 300 s), RPO 6 s (10% of 60 s)."""
    events = [
        ("first_failure", 0.0, "PROBE_FAILED:reset"),
        ("confirmed", 6.0, "Primary us-east-1 lost and confirmed by the replicas"),
        ("fenced", 9.0, "us-east-1 fenced"),
        ("promoted", 20.0, "us-west-1 on timeline 2"),
        ("dns_switched", 30.0, "127.0.0.2"),
        ("first_verified_write", 36.0, "through 127.0.0.2"),
    ]
    doc: dict[str, Any] = {
        "id": "inc-20261127T210534-911a1e",
        "opened_at": T0,
        "primary": "us-east-1",
        "region": "us-east",
        "status": "failed_over",
        "kind": "primary_loss",
        "timeline": [{"event": e, "at": T0 + at, "detail": d} for e, at, d in events],
        "run_id": "20261127T210536-failover-d6be3e",
        "plan": {"why": "us-west-1 in us-west: within the RPO", "budget": {"rto_seconds": 300.0}},
        "new_primary": "us-west-1",
        "rto_seconds": 36.0,
        "rpo_seconds": 6.0,
        "rpo_bytes": 8192,
        "divergent": [],
        "notes": [],
        "closed_at": T0 + 40.0,
        "level": 2,
        "levels": [
            {"level": 2, "at": T0 + 6.5, "reason": "primary lost", "authority": "VP Engineering"}
        ],
        "notifications": [
            note(7.0, "opened", "bcp-team"),
            note(7.5, "opened", "customers", ok=False, channel="statuspage", detail="HTTP 503"),
            note(12.0, "update", "engineering", channel="email"),
            note(25.0, "opened", "customers", channel="statuspage"),
            note(41.0, "resolved", "bcp-team"),
        ],
        "external": {},
        "drill_id": None,
    }
    doc.update(changes)
    return doc


def records(retried: bool = True) -> list[dict[str, Any]]:
    run = "20261127T210536-failover-d6be3e"
    out: list[dict[str, Any]] = [{"run": run, "kind": "run_started", "at": T0 + 6.2}]
    for name, start, end, attempts in (
        ("fence", 6.3, 9.0, 2 if retried else 1),
        ("promote", 9.1, 20.0, 1),
    ):
        out.append(
            {"run": run, "kind": "step_started", "at": T0 + start, "step": name, "action": name}
        )
        out.append(
            {
                "run": run,
                "kind": "step_finished",
                "at": T0 + end,
                "step": name,
                "attempts": attempts,
                "duration": end - start,
            }
        )
    out.append({"run": run, "kind": "run_finished", "at": T0 + 37.0})
    return out


def drill() -> dict[str, Any]:
    def leg(name: str, start: float, rto: float, lost: int, dns_ok: bool) -> dict[str, Any]:
        return {
            "name": name,
            "from_node": "us-east-1",
            "from_region": "us-east",
            "to_node": "us-west-1",
            "to_region": "us-west",
            "run_id": f"run-{start:g}",
            "incident_id": f"inc-leg-{start:g}",
            "started_at": T0 + start,
            "finished_at": T0 + start + rto + 1,
            "rto_seconds": rto,
            "rpo_seconds": 0.5,
            "lost_commits": lost,
            "acked_commits": 1200,
            "write_unavailable_seconds": rto - 0.5,
            "phases": [
                {
                    "name": "fence",
                    "action": "fence",
                    "status": "ok",
                    "started_at": T0 + start,
                    "finished_at": T0 + start + 1,
                },
                {
                    "name": "promote",
                    "action": "promote",
                    "status": "ok",
                    "started_at": T0 + start + 1,
                    "finished_at": T0 + start + 2,
                },
            ],
            "dns": [{"provider": "route53", "ok": dns_ok, "detail": "" if dns_ok else "throttled"}],
            "smoke": [
                {"name": "write", "kind": "sql", "ok": True, "detail": "", "latency_ms": 4.2}
            ],
            "passed": dns_ok,
            "reasons": [] if dns_ok else ["DNS provider route53 failed"],
        }

    return {
        "id": "drill-20261127T221000-ab12cd",
        "kind": "switchover",
        "trigger": "scheduled",
        "dry_run": False,
        "started_at": T0,
        "finished_at": T0 + 60.0,
        "result": "failed",
        "reasons": ["leg us-west -> us-east failed"],
        "objectives": {"rto_seconds": 300.0, "rpo_seconds": 60.0},
        "prechecks": [{"name": "replicas streaming", "ok": True, "detail": "2 of 2"}],
        "load": {"rate": 50, "acked": 2400, "errors": 3},
        "legs": [
            leg("us-east -> us-west", 5.0, 3.5, 0, True),
            leg("us-west -> us-east", 30.0, 4.5, 2, False),
        ],
    }


def item(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(i for s in doc["checklist"] for i in s["items"] if i["item"] == name)


# --- the checklist -------------------------------------------------------------------------


def test_checklist_is_appendix_c_verbatim() -> None:
    doc = rm.build_incident_doc(incident())
    assert [(s["section"], [i["item"] for i in s["items"]]) for s in doc["checklist"]] == (
        APPENDIX_C
    )
    assert doc["checklist_total"] == 17


def _without_event(name: str) -> dict[str, Any]:
    inc = incident()
    inc["timeline"] = [e for e in inc["timeline"] if e["event"] != name]
    return inc


def _only_failed_notifications() -> dict[str, Any]:
    inc = incident()
    for n in inc["notifications"]:
        n["ok"] = False
    return inc


CASES: list[tuple[str, dict[str, Any], bool, float | None, str]] = [
    ("Incident confirmed", incident(), True, 6.0, "confirmed"),
    ("Incident confirmed", _without_event("confirmed"), False, None, ""),
    ("BCP team notified", incident(), True, 7.0, "sent to bcp-team via slack"),
    ("BCP team notified", _only_failed_notifications(), False, None, ""),
    ("Impact assessed", incident(), True, 6.5, "Level 2 (partial outage): primary lost"),
    ("Impact assessed", incident(levels=[]), False, None, ""),
    ("Level determined", incident(), True, 6.5, "authority VP Engineering"),
    ("Procedures initiated", incident(), True, 9.0, "fenced"),
    ("Procedures initiated", _without_event("fenced"), False, None, ""),
    ("Regular status updates", incident(), True, 12.0, "1 status update(s) sent to engineering"),
    ("Regular status updates", _only_failed_notifications(), False, None, ""),
    ("Customer communication", incident(), True, 25.0, "sent to customers via statuspage"),
    ("Resource coordination", incident(), False, None, ""),
    ("Documentation maintained", incident(), True, 0.0, "incident record inc-"),
    ("Services restored", incident(), True, 20.0, "promoted"),
    (
        "Services restored",
        incident(
            status="recovered",
            new_primary=None,
            timeline=[
                {"event": "first_failure", "at": T0, "detail": ""},
                {"event": "recovered", "at": T0 + 14.0, "detail": "us-east-1 answers again"},
            ],
        ),
        True,
        14.0,
        "primary recovered",
    ),
    ("Services restored", _without_event("promoted"), False, None, ""),
    ("Verification complete", incident(), True, 36.0, "through 127.0.0.2"),
    ("Stakeholders notified", incident(), True, 41.0, "'resolved' sent to bcp-team"),
    ("Stakeholders notified", _only_failed_notifications(), False, None, ""),
    ("Normal operations resumed", incident(), True, 40.0, "closed as failed_over"),
    ("Normal operations resumed", incident(status="failed"), False, None, ""),
    ("Normal operations resumed", incident(closed_at=None, status="open"), False, None, ""),
    ("Lessons learned meeting", incident(), False, None, ""),
    ("Plan updates identified", incident(), False, None, ""),
    ("Documentation updated", incident(), False, None, ""),
    ("Training needs assessed", incident(), False, None, ""),
]


@pytest.mark.parametrize(("name", "inc", "done", "offset", "evidence"), CASES)
def test_checklist_ticks_only_on_evidence(
    name: str, inc: dict[str, Any], done: bool, offset: float | None, evidence: str
) -> None:
    it = item(rm.build_incident_doc(inc), name)
    assert it["done"] is done
    assert it["by"] == ("orchestrator" if done else "people")
    if done:
        assert it["offset"] == pytest.approx(offset)
        assert it["at"] == pytest.approx(T0 + offset)  # type: ignore[operator]
        assert evidence in it["evidence"]
    else:
        assert it["at"] is None
        assert it["evidence"] == ""


def test_procedures_initiated_prefers_the_journaled_run_start() -> None:
    it = item(rm.build_incident_doc(incident(), records()), "Procedures initiated")
    assert it["offset"] == pytest.approx(6.2)
    assert "run 20261127T210536-failover-d6be3e started" in it["evidence"]


# --- phases, budgets and observations --------------------------------------------------------


def test_phases_from_the_timeline_and_the_journal() -> None:
    doc = rm.build_incident_doc(incident(), records())
    phases = doc["legs"][0]["phases"]
    rows = [(p["name"], p["group"], p["start"], p["end"]) for p in phases]
    assert rows == [
        ("detection", "timeline", 0.0, 6.0),
        ("decision & fencing", "timeline", 6.0, 9.0),
        ("promotion", "timeline", 9.0, 20.0),
        ("DNS switch", "timeline", 20.0, 30.0),
        ("verification", "timeline", 30.0, 36.0),
        ("step fence", "steps", 6.3, 9.0),
        ("step promote", "steps", 9.1, 20.0),
    ]
    assert phases[5]["attempts"] == 2
    assert phases[3]["duration"] == pytest.approx(10.0)


def test_a_missing_event_starts_the_next_phase_at_the_previous_one() -> None:
    doc = rm.build_incident_doc(_without_event("fenced"))
    names = {p["name"]: (p["start"], p["end"]) for p in doc["legs"][0]["phases"]}
    assert "decision & fencing" not in names
    assert names["promotion"] == (6.0, 20.0)


def test_budget_percentages_and_verdict() -> None:
    doc = rm.build_incident_doc(incident())
    assert doc["objectives"] == {"rto_seconds": 300.0, "rpo_seconds": 60.0}
    assert doc["rto"] == {
        "used_seconds": 36.0,
        "budget_seconds": 300.0,
        "percent": 12.0,
        "within": True,
    }
    assert doc["rpo"]["percent"] == 10.0
    assert doc["rpo"]["bytes"] == 8192
    assert doc["verdict"] == "met"
    slow = rm.build_incident_doc(incident(rto_seconds=420.0))
    assert slow["rto"]["percent"] == 140.0
    assert slow["verdict"] == "missed"
    assert rm.build_incident_doc(incident(closed_at=None, status="open"))["verdict"] == "open"
    cfg = rm.build_incident_doc(incident(), objectives={"rto_seconds": 120, "rpo_seconds": 10})
    assert cfg["rto"]["percent"] == 30.0
    assert cfg["rpo"]["within"] is True


def test_observations_the_orchestrator_can_state() -> None:
    obs = rm.build_incident_doc(incident(), records())["lessons"]["observations"]
    text = "\n".join(obs)
    assert "RTO used 12%" in text
    assert "RPO used 10%" in text
    assert "Step fence needed 2 attempts." in text
    assert "Notification 'opened' to customers via statuspage failed" in text
    assert "HTTP 503" in text
    assert "The longest phase was promotion" in text


def test_lessons_prompts() -> None:
    lessons = rm.build_incident_doc(incident())["lessons"]
    assert [p["title"] for p in lessons["prompts"]] == [
        "What happened",
        "What went well",
        "What went wrong",
        "Action items",
    ]


def test_partial_and_mistyped_records_do_not_raise() -> None:
    doc = rm.build_incident_doc(
        {"id": "inc-x", "opened_at": "yesterday", "timeline": [{"event": "confirmed"}, 7]}
    )
    assert doc["verdict"] == "open"
    assert doc["legs"][0]["phases"] == []
    assert drillreport.build_drill_doc({"id": "drill-x"})["verdict"] == "running"
    with pytest.raises(TypeError):
        rm.build_incident_doc([])  # type: ignore[arg-type]


def test_drill_document() -> None:
    doc = drillreport.build_drill_doc(drill())
    assert doc["kind"] == "drill"
    assert doc["verdict"] == "failed"
    assert [leg["offset"] for leg in doc["legs"]] == [5.0, 30.0]
    assert doc["rto"]["used_seconds"] == 4.5
    assert doc["rto"]["percent"] == 1.5
    assert doc["rpo"]["lost_commits"] == 2
    assert doc["checklist"] == []
    assert [p["name"] for p in doc["legs"][0]["phases"]] == ["fence", "promote"]
    assert doc["legs"][1]["phases"][1]["start"] == 1.0
    text = "\n".join(doc["lessons"]["observations"])
    assert "2 of 1200 acknowledged commits were lost" in text
    assert "DNS provider route53 failed: throttled" in text
    assert "The write load saw 3 errors." in text


# --- the chart -------------------------------------------------------------------------------


def test_chart_keeps_a_four_second_incident_legible() -> None:
    doc = rm.build_incident_doc(incident(rto_seconds=4.0), records())
    c = reports.timeline_chart(doc["legs"][0], doc["objectives"])
    assert len(c["bars"]) == len(doc["legs"][0]["phases"])
    assert all(b["w"] >= 4.0 for b in c["bars"])
    assert c["rto_line"]["x"] == c["plot_right"]  # the axis ends at the 300 s budget
    assert c["ticks"][-1]["label"] == "5 min"
    assert c["rpo"]["line_x"] < c["rto_line"]["x"]


def test_chart_axis_grows_past_the_budget() -> None:
    inc = incident(rto_seconds=420.0)
    inc["timeline"][-1]["at"] = T0 + 420.0
    doc = rm.build_incident_doc(inc)
    c = reports.timeline_chart(doc["legs"][0], doc["objectives"])
    assert c["plot_left"] < c["rto_line"]["x"] < c["plot_right"]
    assert c["rto_used"]["x"] > c["rto_line"]["x"]


# --- rendering -------------------------------------------------------------------------------


def test_markdown_contains_the_figures() -> None:
    md = reports.render(rm.build_incident_doc(incident(), records()), "md")
    assert md.startswith("# Incident inc-20261127T210534-911a1e")
    assert "| RTO (recovery time) | 5 min | 36.0 s | 12% | yes |" in md
    assert "| RPO (data loss window) | 1 min | 6 s (8192 bytes) | 10% | yes |" in md
    assert "| promotion | timeline | +9.000 s | +20.000 s | 11.0 s | ok |" in md
    assert "- [x] Incident confirmed — 2026-11-27" in md
    assert "- [ ] Resource coordination — for people" in md
    assert "## Lessons learned" in md
    assert "### What went well" in md
    assert "- RTO used 12%" in md


SPARSE = [
    {"id": "inc-open", "opened_at": T0, "primary": "p", "region": "r"},
    {
        "id": "inc-held",
        "opened_at": T0,
        "status": "held",
        "timeline": [
            {"event": "first_failure", "at": T0, "detail": ""},
            {"event": "confirmed", "at": T0 + 5, "detail": ""},
            {"event": "hold", "at": T0 + 6, "detail": "no replica within the RPO"},
        ],
    },
    {
        "id": "drill-refused",
        "started_at": T0,
        "finished_at": T0 + 1,
        "result": "refused",
        "reasons": ["replica eu-1 is 90 s behind"],
        "legs": [],
        "prechecks": [{"name": "lag", "ok": False, "detail": "eu-1 90 s behind"}],
    },
    {"id": "drill-dry", "started_at": T0, "dry_run": True, "result": "passed"},
]


@pytest.mark.parametrize("record", SPARSE, ids=lambda r: r["id"])
def test_sparse_records_render_in_every_format(record: dict[str, Any]) -> None:
    if record["id"].startswith("inc-"):
        doc = rm.build_incident_doc(record)
    else:
        doc = drillreport.build_drill_doc(record)
    for fmt in reports.FORMATS:
        assert doc["id"] in reports.render(doc, fmt)
    text = "\n".join(doc["lessons"]["observations"])
    if record["id"] == "inc-held":
        assert "Automatic failover was held at +6.000 s: no replica within the RPO." in text
        assert doc["verdict"] == "open"
    if record["id"] == "drill-refused":
        assert doc["verdict_text"] == "Refused before any change: replica eu-1 is 90 s behind."
        assert "Pre-check lag failed: eu-1 90 s behind." in text


def test_json_round_trip() -> None:
    for doc in (rm.build_incident_doc(incident(), records()), drillreport.build_drill_doc(drill())):
        assert json.loads(reports.render(doc, "json")) == doc


def test_unknown_format() -> None:
    with pytest.raises(UsageError, match="unknown report format"):
        reports.render(drillreport.build_drill_doc(drill()), "pdf")


def test_html_escapes_hostile_content() -> None:
    inc = incident(notes=[HOSTILE], primary="<b>us-east-1</b>")
    inc["timeline"][1]["detail"] = HOSTILE
    inc["notifications"][1]["detail"] = HOSTILE
    doc = rm.build_incident_doc(inc)
    html = reports.render(doc, "html")
    assert html.count("<script") == 1
    assert "<img" not in html and "<b>" not in html
    assert "&lt;/script&gt;&lt;script&gt;" in html
    assert "Content-Security-Policy" in html and "script-src 'sha256-" in html
    md = reports.render(doc, "md")
    assert "<script" not in md and "<img" not in md and "<b>" not in md
    assert "&lt;/script>" in md


def test_html_is_standalone() -> None:
    html = reports.render(drillreport.build_drill_doc(drill()), "html")
    for external in ("http://", "https://", "src=", "<link", "@import"):
        assert external not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert html.count('class="phase-bar') == 4
    assert html.count('data-budget="rto"') == 2
    assert 'document.body.dataset.rendered = "ok"' in html


# --- files -----------------------------------------------------------------------------------


def write_incident(state: Path, inc: dict[str, Any]) -> None:
    (state / "incidents").mkdir(parents=True, exist_ok=True)
    (state / "incidents" / f"{inc['id']}.json").write_text(json.dumps(inc))


def write_drill(state: Path, d: dict[str, Any]) -> None:
    (state / "drills").mkdir(parents=True, exist_ok=True)
    (state / "drills" / f"{d['id']}.json").write_text(json.dumps(d))


def test_load_source_reads_incident_with_its_journal_and_drills(tmp_path: Path) -> None:
    write_incident(tmp_path, incident())
    write_drill(tmp_path, drill())
    journal = Journal.in_state_dir(tmp_path)
    for r in records():
        journal.append(r)
    doc = reports.load_source(tmp_path, "inc-20261127T210534-911a1e", now=T0 + 100)
    assert doc["generated_at"] == T0 + 100
    assert [p["name"] for p in doc["legs"][0]["phases"]][-2:] == ["step fence", "step promote"]
    assert reports.load_source(tmp_path, "drill-20261127T221000-ab12cd")["kind"] == "drill"
    listed = reports.list_sources(tmp_path)
    assert [(s["id"], s["kind"], s["result"]) for s in listed] == [
        ("drill-20261127T221000-ab12cd", "drill", "failed"),
        ("inc-20261127T210534-911a1e", "incident", "failed_over"),
    ]


@pytest.mark.parametrize("bad", ["inc-nope", "drill-nope", "nope", "inc-../../etc/passwd", ""])
def test_unknown_id_is_a_usage_error_naming_recent_ids(tmp_path: Path, bad: str) -> None:
    write_incident(tmp_path, incident())
    with pytest.raises(UsageError, match="most recent: inc-20261127T210534-911a1e"):
        reports.load_source(tmp_path, bad)


def test_unknown_id_with_nothing_recorded(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no incidents or drills recorded"):
        reports.load_source(tmp_path, "inc-nope")


def test_unreadable_records(tmp_path: Path) -> None:
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / "drill-bad.json").write_text("{not json")
    (tmp_path / "drills" / "drill-list.json").write_text("[1, 2]")
    (tmp_path / "incidents").mkdir()
    (tmp_path / "incidents" / "inc-bad.json").write_text('{"id": "inc-bad"}')
    for ident in ("drill-bad", "drill-list", "inc-bad"):
        with pytest.raises(HeliosError, match="unreadable") as exc:
            reports.load_source(tmp_path, ident)
        assert not isinstance(exc.value, UsageError)
    assert {s["result"] for s in reports.list_sources(tmp_path)} == {"unreadable", "-"}


def test_write_reports_atomically(tmp_path: Path) -> None:
    doc = rm.build_incident_doc(incident())
    paths = reports.write_reports(doc, tmp_path)
    assert sorted(p.name for p in paths) == [f"{doc['id']}.{x}" for x in ("html", "json", "md")]
    assert json.loads((tmp_path / "reports" / f"{doc['id']}.json").read_text()) == doc
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]
    bad = copy.deepcopy(doc)
    bad["id"] = "../escape"
    with pytest.raises(UsageError):
        reports.write_reports(bad, tmp_path)


# --- the command line ----------------------------------------------------------------------


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    write_incident(tmp_path / "state", incident())
    write_drill(tmp_path / "state", drill())
    inc_id = "inc-20261127T210534-911a1e"

    assert main(["report", inc_id, "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Incident {inc_id}")
    assert "12%" in out

    assert main(["report", inc_id, "--format", "json", "-c", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out)["rto"]["percent"] == 12.0

    target = tmp_path / "out" / "r.html"
    args = ["report", "drill-20261127T221000-ab12cd", "-f", "html", "-o", str(target)]
    assert main([*args, "-c", str(cfg)]) == 0
    assert str(target) in capsys.readouterr().out
    assert target.read_text().startswith("<!DOCTYPE html>")

    assert main(["report", "--list", "-c", str(cfg)]) == 0
    listing = capsys.readouterr().out
    assert inc_id in listing and "drill-20261127T221000-ab12cd" in listing
    assert "failed_over" in listing


def test_cli_report_uses_helios_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELIOS_CONFIG", str(write_config(tmp_path)))
    assert main(["report", "--list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["report", "inc-nope"], "no incident inc-nope"),
        (["report"], "give the ID"),
        (["report", "inc-x", "--list"], "either an ID or --list"),
    ],
)
def test_cli_report_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main([*argv, "-c", str(write_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err
