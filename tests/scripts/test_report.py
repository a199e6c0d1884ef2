"""The summary table from synthetic run folders: why each run stopped, and cells of one
model whose step counts differ by more than 5 percent flagged (issue 20)."""
import csv
import io
import json

from scripts.engine import report


def _run(runs, rid, status, reason="", **summary):
    d = runs / rid
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": status, "reason": reason}))
    if summary:
        base = {"run_id": rid, "model": "lenet5", "primary_metric": "accuracy",
                "eval_accuracy": 97.0, "sparsity": 0.5}
        (d / "summary.json").write_text(json.dumps({**base, **summary}))
    return {"run_id": rid, "model": "lenet5", "optimizer": "adamw",
            "pruning_method": "magnitude", "target_sparsity": 0.5}


def _rows(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(report, "RUNS", str(runs))
    plan = [_run(runs, "a_full", "done", "finished", steps=1000, stop_reason="finished"),
            _run(runs, "b_close", "done", "x", steps=960, stop_reason="finished"),
            _run(runs, "c_budget", "done", "x", steps=700,
                 stop_reason="time budget of 60s reached at step 700"),
            _run(runs, "d_failed", "failed", "loss is nan at step 12; lower lr or use fp32/bf16; "
                 "last good checkpoint kept"),
            _run(runs, "e_queued", "queued")]
    return report.collect(plan)


def test_the_table_says_why_each_run_stopped(tmp_path, monkeypatch):
    rows = _rows(tmp_path, monkeypatch)
    assert [r["stop"] for r in rows] == [
        "finished", "finished", "time budget",
        "failed: loss is nan at step 12; lower lr or use fp32/bf16; last good checkpoint kept", ""]
    text = report.render_text(rows)
    head = text.splitlines()[0].split()
    assert head[:3] == ["run", "status", "stop"]
    line = {ln.split()[0]: ln for ln in text.splitlines()[2:] if ln.split()}
    assert "time budget" in line["c_budget"] and "finished" in line["a_full"]
    assert "failed: loss is nan" in line["d_failed"], line["d_failed"]
    assert "last good checkpoint" not in line["d_failed"], \
        "the table's stop cell is short; the whole reason is in the CSV and under the table"
    md = report.render_markdown(rows, "Matrix t")
    assert "| stop |" in md and "| time budget |" in md
    got = {r["run_id"]: r for r in csv.DictReader(io.StringIO(report.render_csv(rows)))}
    assert got["c_budget"]["stop"] == "time budget"
    assert "last good checkpoint kept" in got["d_failed"]["reason"]


def test_cells_whose_step_counts_differ_are_flagged(tmp_path, monkeypatch):
    rows = _rows(tmp_path, monkeypatch)
    got = {r["run_id"]: r for r in csv.DictReader(io.StringIO(report.render_csv(rows)))}
    assert got["c_budget"]["steps_flag"] == "-30% vs 1000"
    assert [r for r in got if got[r]["steps_flag"]] == ["c_budget"], "4 percent short is no flag"
    for text in (report.render_text(rows), report.render_markdown(rows, "Matrix t")):
        note = [ln for ln in text.splitlines() if ln.startswith("Step counts differ")]
        assert len(note) == 1 and "c_budget (700 steps" in note[0] and "b_close" not in note[0]
    # another model's step counts are its own
    rows = [dict(r, model="gpt2") if r["run_id"] == "c_budget" else r for r in rows]
    for r in rows:
        r.pop("steps_flag", None)
    assert report.flag_steps(rows) == []
