"""results/benchmarks.csv: the one table every benchmark appends to, with device, versions,
commit and date on each row."""
import csv

import pytest

from scripts.bench import table

pytestmark = pytest.mark.bench   # the measurement tools' group: pytest -m bench


def test_rows_append_with_their_meta_and_the_header_once(tmp_path):
    path = tmp_path / "b.csv"
    meta = {"gpu": "NVIDIA H200", "date": "2026-12-02T10:31:46", "torch": "2.11", "triton": "3.6"}
    row = {"op": "matmul", "shape": [16, 32, 8], "ms": 0.5, "torch_ms": 0.4, "ratio": 0.8,
           "unknown_field": 1}
    table.append([row], meta, "r1.json", str(path), commit="abc1234")
    table.append([dict(row, ms=0.25)], dict(meta, gpu="cpu"), "r2.json", str(path), commit="def")
    rows = list(csv.DictReader(open(path)))
    assert open(path).read().count("date,device") == 1
    assert [(r["device"], r["commit"], r["report"], r["shape"], r["ms"]) for r in rows] == [
        ("NVIDIA H200", "abc1234", "r1.json", "16x32x8", "0.5"), ("cpu", "def", "r2.json", "16x32x8", "0.25")]


def test_the_committed_table_has_every_column():
    rows = list(csv.DictReader(open(table.TABLE)))
    assert rows and set(table.COLUMNS) == set(rows[0])
    assert all(r["device"] and r["date"] and r["commit"] and r["torch"] for r in rows)


def test_a_table_of_older_columns_is_widened_keeping_its_rows(tmp_path):
    path = tmp_path / "b.csv"
    old = table.COLUMNS[:17]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerow(dict(zip(old, [f"v{i}" for i in range(17)])))
    table.append([{"op": "train_vision", "model": "resnet50", "batch": 256, "bare_img_s": 5.5}],
                 {"device": "NVIDIA H200", "date": "2026-12-04"}, "r.json", str(path), commit="c")
    rows = list(csv.DictReader(open(path)))
    assert tuple(rows[0]) == table.COLUMNS
    assert [rows[0][c] for c in old] == [f"v{i}" for i in range(17)] and rows[0]["model"] == ""
    assert (rows[1]["model"], rows[1]["batch"], rows[1]["bare_img_s"]) == ("resnet50", "256", "5.5")
    path.write_text("date,mystery\n1,2\n")
    with pytest.raises(ValueError, match="mystery"):
        table.append([{}], {}, "r.json", str(path), commit="c")
