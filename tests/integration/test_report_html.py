"""The HTML reports render in headless Chromium (Debian's package) without errors and show the
timeline: one bar per phase and the RTO budget line in the DOM, and a screenshot that is not
blank. ``make test`` installs Chromium (deploy/scripts/install-test-tools.sh); without it these
tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator import drillreport, reports
from orchestrator import reportmodel as rm

pytestmark = pytest.mark.browser

T0 = 1_795_813_534.426381
RUN = "20261127T210536-failover-d6be3e"
BAR_BLUE = (0x2F, 0x6F, 0xDE)  # --bar in the page's CSS: timeline phase bars
STEP_TEAL = (0x12, 0x87, 0x7A)  # --step: runbook step bars
BUDGET_RED = (0xC6, 0x28, 0x28)  # --bad: the budget lines


def chromium() -> str:
    """The Chromium executable ($HELIOS_CHROMIUM, else chromium on PATH); fails the test when
    there is none (``make test`` installs it: a skip would hide a broken report page)."""
    found = os.environ.get("HELIOS_CHROMIUM") or shutil.which("chromium")
    found = found or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "Chromium is not installed: run `make testtools` "
            "(deploy/scripts/install-test-tools.sh) or set HELIOS_CHROMIUM"
        )
    return found


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1200,1600",
        *extra,
        page.as_uri(),
    ]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


# --- realistic records (from a sandbox failover: 3.3 s from first failure to a verified write) ---


def incident() -> dict[str, Any]:
    events = [
        ("first_failure", 0.0, "PROBE_FAILED:reset"),
        ("confirmed", 1.9997, "Primary us-east-1 lost and confirmed by the replicas"),
        ("fenced", 2.9471, "us-east-1: fence_command ran on the unreachable (refused)"),
        ("promoted", 3.0778, "us-west-1 on timeline 2"),
        ("dns_switched", 3.1836, "127.0.0.2 (success: route53, cloudflare, gcloud)"),
        ("first_verified_write", 3.3251, "through 127.0.0.2"),
    ]
    return {
        "id": "inc-20261127T210534-911a1e",
        "opened_at": T0,
        "primary": "us-east-1",
        "region": "us-east",
        "status": "failed_over",
        "kind": "primary_loss",
        "timeline": [{"event": e, "at": T0 + at, "detail": d} for e, at, d in events],
        "run_id": RUN,
        "plan": {"why": "us-west-1 in us-west: within the RPO, lag 0.0s / 0 bytes"},
        "new_primary": "us-west-1",
        "rto_seconds": 3.325,
        "rpo_seconds": 0.4,
        "rpo_bytes": 16384,
        "divergent": [],
        "notes": ["</script><script>document.body.dataset.pwned = '1'</script>"],
        "closed_at": T0 + 3.331,
        "level": 2,
        "levels": [
            {"level": 2, "at": T0 + 2.1, "reason": "primary lost", "authority": "VP Engineering"}
        ],
        "notifications": [
            {
                "at": T0 + 2.2,
                "event": "opened",
                "audience": "bcp-team",
                "channel": "slack",
                "ok": True,
                "via": "slack",
                "detail": "",
            },
            {
                "at": T0 + 2.3,
                "event": "opened",
                "audience": "customers",
                "channel": "statuspage",
                "ok": False,
                "via": "statuspage",
                "detail": "HTTP 503 <b>bad gateway</b>",
            },
            {
                "at": T0 + 3.4,
                "event": "resolved",
                "audience": "bcp-team",
                "channel": "slack",
                "ok": True,
                "via": "discord",
                "detail": "slack down; sent through the backup",
            },
        ],
        "external": {},
        "drill_id": None,
    }


def journal_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"run": RUN, "kind": "run_started", "at": T0 + 2.041}]
    for name, start, end, attempts in (
        ("fence", 2.051, 2.950, 2),
        ("promote", 2.953, 3.086, 1),
        ("ensure_slots", 3.093, 3.114, 1),
        ("repoint", 3.120, 3.133, 1),
        ("switch_dns", 3.136, 3.185, 1),
        ("verify_write", 3.187, 3.328, 1),
        ("notify", 3.329, 3.330, 1),
    ):
        out.append(
            {"run": RUN, "kind": "step_started", "at": T0 + start, "step": name, "action": name}
        )
        out.append(
            {
                "run": RUN,
                "kind": "step_finished",
                "at": T0 + end,
                "step": name,
                "attempts": attempts,
                "duration": end - start,
            }
        )
    out.append({"run": RUN, "kind": "run_finished", "at": T0 + 3.331})
    return out


def drill() -> dict[str, Any]:
    def leg(name: str, frm: str, to: str, start: float) -> dict[str, Any]:
        steps = [
            ("fence", 0.0, 0.9),
            ("promote", 0.9, 1.1),
            ("switch_dns", 1.1, 1.3),
            ("verify_write", 1.3, 1.5),
        ]
        return {
            "name": name,
            "from_node": f"{frm}-1",
            "from_region": frm,
            "to_node": f"{to}-1",
            "to_region": to,
            "run_id": f"20261127T2210{int(start):02d}-switchover-aaaaaa",
            "incident_id": f"inc-20261127T2210{int(start):02d}-bbbbbb",
            "started_at": T0 + start,
            "finished_at": T0 + start + 1.6,
            "rto_seconds": 1.5,
            "rpo_seconds": 0.0,
            "lost_commits": 0,
            "acked_commits": 812,
            "write_unavailable_seconds": 1.2,
            "phases": [
                {
                    "name": n,
                    "action": n,
                    "status": "ok",
                    "started_at": T0 + start + a,
                    "finished_at": T0 + start + b,
                }
                for n, a, b in steps
            ],
            "dns": [{"provider": "route53", "ok": True, "detail": "INSYNC"}],
            "smoke": [
                {"name": "write", "kind": "sql", "ok": True, "detail": "", "latency_ms": 3.1}
            ],
            "passed": True,
            "reasons": [],
        }

    return {
        "id": "drill-20261127T221000-ab12cd",
        "kind": "switchover",
        "trigger": "scheduled",
        "dry_run": False,
        "started_at": T0,
        "finished_at": T0 + 20.0,
        "result": "passed",
        "reasons": [],
        "objectives": {"rto_seconds": 300.0, "rpo_seconds": 60.0},
        "prechecks": [{"name": "replicas streaming", "ok": True, "detail": "2 of 2"}],
        "load": {"rate": 50, "acked": 1624, "errors": 0},
        "legs": [
            leg("us-east -> us-west", "us-east", "us-west", 2.0),
            leg("us-west -> us-east", "us-west", "us-east", 12.0),
        ],
    }


# --- reading the rendered page ---------------------------------------------------------------


class Dom(HTMLParser):
    """Every element of the dumped DOM as (tag, attributes), in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if t == tag and all(v in a.get(k.rstrip("_"), "").split() for k, v in attrs.items())
        ]


def svg_children(dumped: str, svg_id: str) -> Dom:
    start = dumped.index(f'id="{svg_id}"')
    return Dom(dumped[start : dumped.index("</svg>", start)])


def png_pixels(data: bytes) -> Iterator[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev = bytearray(stride)
    for y in range(height):
        base = y * (stride + 1)
        kind, line = raw[base], bytearray(raw[base + 1 : base + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        for x in range(0, stride, bpp):
            yield line[x], line[x + 1], line[x + 2]
        prev = line


def close(color: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 6 for a, b in zip(color, want, strict=True))


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["incident", "drill"])
def test_html_report_renders_in_headless_chromium(tmp_path: Path, which: str) -> None:
    if which == "incident":
        doc = rm.build_incident_doc(incident(), journal_records(), generated_at=T0 + 60)
    else:
        doc = drillreport.build_drill_doc(drill(), generated_at=T0 + 60)
    paths = reports.write_reports(doc, tmp_path / "state")
    page = next(p for p in paths if p.suffix == ".html")

    dumped = run_chromium(page, tmp_path / "profile", "--dump-dom").stdout
    dom = Dom(dumped)
    (body,) = dom.find("body")
    assert body.get("data-rendered") == "ok", dumped[-3000:]
    assert "data-errors" not in body, body["data-errors"]
    assert "data-pwned" not in body  # the hostile note stayed text
    assert len(dom.find("script")) == 1

    for n, leg in enumerate(doc["legs"]):
        svg = svg_children(dumped, f"timeline-{n}")
        bars = svg.find("rect", class_="phase-bar")
        assert [b["data-phase"] for b in bars] == [p["name"] for p in leg["phases"]]
        assert all(float(b["width"]) >= 4 for b in bars)
        (rto,) = svg.find("line", class_="rto-budget")
        assert rto["data-seconds"] == "300.0"
        assert len(svg.find("line", class_="rpo-budget")) == 1
        assert len(svg.find("rect", class_="rpo-track")) == 1
    if which == "incident":
        assert len(dom.find("li", class_="done")) == doc["checklist_done"] > 0
        assert len(dom.find("li", class_="todo")) == 17 - doc["checklist_done"]
        assert "&lt;/script&gt;&lt;script&gt;" in dumped

    shot = tmp_path / "shot.png"
    run_chromium(page, tmp_path / "profile", f"--screenshot={shot}")
    colors = Counter(png_pixels(shot.read_bytes()))
    assert len(colors) > 50, "the screenshot is (nearly) blank"

    def count(want: tuple[int, int, int]) -> int:
        return sum(n for c, n in colors.items() if close(c, want))

    assert count(BAR_BLUE if which == "incident" else STEP_TEAL) > 100, "no timeline bars"
    assert count(BUDGET_RED) > 20, "no budget line visible"
