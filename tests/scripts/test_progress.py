"""Live progress of a running matrix (issue 20): the lines and the matrix ETA from
status.json files with and without the trainer's per-interval fields, and the in-place
redraw on a terminal. The plain lines off a terminal are checked on a real matrix in
test_matrix.py."""
import os
import pty
import re
import select
import time

from conftest import PY, REPO, write_config
from scripts.engine import progress

OLD = {"status": "running", "step": 0, "total_steps": 540, "started": 1000.0}
NEW = {"status": "running", "step": 120, "total_steps": 540, "loss": 0.41234, "rate": 1234.4,
       "unit": "tokens", "elapsed_s": 60.0, "eta_s": 210.0, "last_eval": {"accuracy": 91.25},
       "started": 1000.0}


def test_a_run_line_shows_what_status_json_has():
    assert progress.run_line("r1", NEW, now=1060.0) == (
        "r1  step 120/540  loss 0.4123  1,234 tokens/s  accuracy 91.25  ETA 3m30s")
    assert progress.run_line("r1", OLD, now=1060.0) == "r1  step 0/540"      # no ETA at step 0
    assert progress.run_line("r1", {"status": "queued"}) == "r1  starting"
    # no eta_s: elapsed time per step so far
    assert progress.run_line("r1", dict(NEW, eta_s=None)).endswith("ETA 3m30s")
    # no elapsed_s either: time since started
    st = {"status": "running", "step": 100, "total_steps": 300, "started": 1000.0}
    assert progress.run_line("r1", st, now=1050.0) == "r1  step 100/300  ETA 1m40s"
    done = {"status": "done", "step": 540, "total_steps": 540, "eta_s": 0.0}
    assert progress.run_line("r1", done) == "r1  step 540/540"


def test_the_matrix_eta_comes_from_finished_runs_and_planned_steps():
    # 2 finished runs: 100 s per 500 steps = 0.2 s/step; a new-style running run says 210 s
    # left; two queued runs of 1000 planned steps = 400 s; 2 slots: (210 + 400) / 2
    eta = progress.matrix_eta([(100.0, 500), (100.0, 500)], [NEW], [1000, 1000], jobs=2)
    assert abs(eta - 305.0) < 1e-6
    # an old-style running run (step 0, no eta): its 540 planned steps at 0.2 s/step
    eta = progress.matrix_eta([(100.0, 500)], [OLD], [None], jobs=1, now=1060.0)
    assert abs(eta - (540 + 520) * 0.2) < 1e-6    # the unknown queued run: mean of 540 and 500
    # never less than the longest running run
    assert progress.matrix_eta([(10.0, 100)], [NEW], [], jobs=8) == 210.0
    # nothing finished, nothing measured yet: unknown, shown as ?
    assert progress.matrix_eta([], [OLD], [540], jobs=1, now=1000.0) is None
    assert progress.fmt_time(None) == "?" and progress.fmt_time(3725) == "1h02m"


def test_the_display_reads_status_files(tmp_path):
    import json

    class Cfg:
        def __init__(self, rid, max_steps=0):
            self.rid, self.model, self.dataset, self.batch_size, self.epochs = rid, "m", "d", 32, 3
            self.max_steps = max_steps

        def run_id(self):
            return self.rid

    for rid, st in (("a", NEW), ("b", OLD)):
        (tmp_path / rid).mkdir()
        (tmp_path / rid / "status.json").write_text(json.dumps(st))
    d = progress.Display([Cfg("a"), Cfg("b"), Cfg("c")], 2, lambda rid: str(tmp_path / rid),
                         interval=0)
    d.started("a")
    d.started("b")
    lines = d.lines(now=1060.0)
    assert lines[0].startswith("a  step 120/540  loss 0.4123") and lines[1] == "b  step 0/540"
    assert lines[2].startswith("matrix: 0/3 done, 2 running, 1 queued, ETA ")


def test_on_a_terminal_the_lines_are_redrawn_in_place(tmp_path):
    results = tmp_path / "results"
    cfg = write_config(tmp_path / ".config", 'CONFIG_MATRIX_NAME="pty"\nCONFIG_LENET5_EPOCHS=1\n'
                       '# CONFIG_TRACKIO is not set\nCONFIG_MONITOR_INTERVAL="0"\n')
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.environ.update(TERM="xterm", KNLP_RESULTS=str(results), COLUMNS="200")
        os.execv(PY, [PY, os.path.join(REPO, "scripts", "engine", "matrix.py"), "run",
                      "--config", cfg])
    out, t0 = b"", time.time()
    while time.time() - t0 < 300:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    assert "matrix: 0/1 done, 1 running" in text, text[-3000:]
    # rich's Live moves the cursor back up / erases the line to redraw the block
    assert re.search(r"\x1b\[\d*A|\x1b\[2K", text), text[-3000:]
    assert ".. " not in text, "on a terminal: no plain periodic lines"
