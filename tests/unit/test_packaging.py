"""What a wheel ships: the package with its templates, and the runbooks where the daemon looks
for them when it is not run from a checkout (``<prefix>/share/helios-orchestrator/runbooks``)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_runbooks_and_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("helios_orchestrator-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(
        n.split("/")[0]
        for n in names
        if n.endswith(".data/data/share/helios-orchestrator/runbooks/failover.yaml")
    )
    for book in sorted(p.name for p in (ROOT / "runbooks").glob("*.yaml")):
        assert f"{data}/data/share/helios-orchestrator/runbooks/{book}" in names, book
    for template in (ROOT / "orchestrator" / "templates").rglob("*.j2"):
        assert template.relative_to(ROOT).as_posix() in names, template
    assert "orchestrator/py.typed" in names and "probes/py.typed" in names
