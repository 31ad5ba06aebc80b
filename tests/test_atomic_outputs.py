"""Single-file outputs (explain's CSV, a code map) appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from ehrseq.io.code_map import read_code_map, write_code_map
from ehrseq.io.guards import atomic_file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "importance.csv"
    out.write_text("group,importance\nlabs,0.1\n")
    with pytest.raises(RuntimeError), atomic_file(out) as tmp:
        tmp.write_text("group,importance\nla")  # half a table, then the job dies
        raise RuntimeError("disk full")
    assert out.read_text() == "group,importance\nlabs,0.1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["importance.csv"]


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    out = tmp_path / "importance.csv"
    out.write_text("old\n")
    with atomic_file(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_text("new\n")
        assert out.read_text() == "old\n"  # readers see the old file until the rename
    assert out.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["importance.csv"]


def test_code_map_round_trip_is_written_atomically(tmp_path: Path) -> None:
    p = write_code_map({"LAB//b": "LAB//B", "LAB//a": "LAB//A"}, tmp_path / "map.csv")
    assert read_code_map(p) == {"LAB//a": "LAB//A", "LAB//b": "LAB//B"}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["map.csv"]
