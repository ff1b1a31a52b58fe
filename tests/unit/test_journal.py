"""The journal: durable appends (fsync), seq order, torn last line, unfinished runs."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.journal import JOURNAL_FILE, Journal, new_run_id


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.in_state_dir(tmp_path)


def test_records_carry_run_seq_at_kind_and_read_back(journal: Journal) -> None:
    assert journal.path.name == JOURNAL_FILE
    journal.append({"run": "r1", "kind": "run_started", "runbook": "failover", "context": {}})
    journal.append({"run": "r1", "kind": "step_started", "step": "fence", "at": 12.5})
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:4] == ["run", "seq", "at", "kind"]
    assert (first["seq"], second["seq"]) == (1, 2)
    assert second["at"] == 12.5
    assert journal.records() == [first, second]


def test_seq_keeps_increasing_across_journal_instances(tmp_path: Path) -> None:
    Journal.in_state_dir(tmp_path).append({"run": "r1", "kind": "note"})
    again = Journal.in_state_dir(tmp_path)
    assert again.append({"run": "r2", "kind": "note"})["seq"] == 2


def test_append_refuses_malformed_records(journal: Journal) -> None:
    with pytest.raises(ValueError, match="run id and a kind"):
        journal.append({"kind": "note"})
    with pytest.raises(ValueError, match="run id and a kind"):
        journal.append({"run": "r", "kind": "step_done"})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        journal.append({"run": "r", "kind": "note", "x": object()})
    assert journal.records() == []
    assert journal.append({"run": "r", "kind": "note"})["seq"] == 1, "failed appends use no seq"


def test_context_values_are_converted_to_json(journal: Journal) -> None:
    @dataclass
    class Node:
        name: str
        region: str

    journal.append({"run": "r", "kind": "note", "node": Node("db1", "eu"), "t": (1, 2)})
    assert journal.records()[0]["node"] == {"name": "db1", "region": "eu"}
    assert journal.records()[0]["t"] == [1, 2]


def test_every_append_is_fsynced_and_the_directory_once_on_creation(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else False)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    for i in range(3):
        journal.append({"run": "r", "kind": "note", "i": i})
    assert len(synced) == 4, "one fsync per record plus the directory when the file was created"
    if os.path.exists("/proc"):
        assert synced == [False, True, False, False]


def test_append_raises_oserror_when_it_cannot_be_made_durable(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output error"):
        journal.append({"run": "r", "kind": "note"})


def test_torn_last_line_is_ignored_reported_and_not_glued_to_the_next_record(
    journal: Journal,
) -> None:
    journal.append({"run": "r1", "kind": "run_started", "runbook": "failover", "context": {}})
    journal.append({"run": "r1", "kind": "step_started", "step": "fence"})
    with journal.path.open("ab") as f:  # the process died in the middle of a write
        f.write(b'{"run":"r1","seq":3,"at":1.0,"kind":"step_fini')
    runs = Journal(journal.path).runs()
    assert [r["seq"] for r in runs["r1"].records] == [1, 2]
    reader = Journal(journal.path)
    reader.runs()
    assert len(reader.warnings) == 1 and "torn last line" in reader.warnings[0]

    writer = Journal(journal.path)
    rec = writer.append({"run": "r1", "kind": "step_finished", "step": "fence", "result": {}})
    assert rec["seq"] == 3
    assert any("terminated a torn last line" in w for w in writer.warnings)
    records = writer.records()
    assert [r["seq"] for r in records] == [1, 2, 3], "the new record parses on its own line"
    assert any(re.search(r":3: ignored a line", w) for w in writer.warnings)


def test_unfinished_finds_runs_without_an_end(journal: Journal) -> None:
    for run, end in (("done", "run_finished"), ("aborted", "run_aborted"), ("died", None)):
        journal.append({"run": run, "kind": "run_started", "runbook": "failover", "context": {}})
        journal.append({"run": run, "kind": "step_started", "step": "fence"})
        if end:
            journal.append({"run": run, "kind": end})
    journal.append({"run": "orphan", "kind": "note"})  # no run_started: cannot be resumed
    unfinished = journal.unfinished()
    assert [r.run_id for r in unfinished] == ["died"]
    died = unfinished[0]
    assert died.status == "running" and died.runbook == "failover"
    assert died.step_states()["fence"]["kind"] == "step_started"
    runs = journal.runs()
    assert (runs["done"].status, runs["aborted"].status) == ("completed", "aborted")


def test_run_ids_are_sortable_and_name_the_runbook() -> None:
    run = new_run_id("failover", now=1_700_000_000.0)
    assert re.fullmatch(r"20231114T221320-failover-[0-9a-f]{6}", run)
    assert new_run_id("failover") != new_run_id("failover")
