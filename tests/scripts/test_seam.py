"""The executor seam: matrix.execute talks to any executor through capacity / slots /
submit_all / poll / attach, records handles in the matrix folder and settles each run by
its state: a fake executor plays queued, running, preempted-and-requeued, failed and
vanished jobs, and a recorded live job is adopted, not started twice."""
import json

import pytest

from conftest import write_config
from lib import fsio, runrecord
from scripts.engine import matrix as mx, plan as planner, report
from scripts.engine.executor import Executor, Handles, State

TINY = """CONFIG_MATRIX_NAME="seam"
CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE=y
CONFIG_MATRIX_SPARSITY_LEVELS="0.7"
# CONFIG_TRACKIO is not set
"""


class Fake(Executor):
    """Each run follows a script of states, one per poll; "done"/"preempted" also write
    what the trainer would."""
    kind = "fake"

    def __init__(self, scripts: dict, live: set = ()):
        self.scripts, self.live_ids = scripts, set(live)
        self.submitted, self.tracked, self.n = [], {}, 0

    def capacity(self, cfgs, jobs):
        return 2

    def slots(self, jobs):
        return max(0, 2 - len(self.tracked))

    def submit(self, job):
        self.n += 1
        h = {"run_id": job.run_id, "kind": "fake", "id": f"fake-{self.n}"}
        self.submitted.append(job.run_id)
        self.tracked[h["id"]] = [h, list(self.scripts[job.run_id])]
        return h

    def attach(self, handle):
        if handle["id"] in self.live_ids:
            self.tracked[handle["id"]] = [handle, list(self.scripts[handle["run_id"]])]
            return True
        return False

    def poll(self, timeout=0.0):
        out = {}
        for hid, (h, steps) in list(self.tracked.items()):
            what = steps.pop(0) if steps else "done"
            d = report.run_dir(h["run_id"])
            if what == "done":
                fsio.atomic_write_json(f"{d}/summary.json", {"primary_metric": "accuracy",
                                                             "eval_accuracy": 99.0})
                runrecord.write_status(d, "done")
                out[hid] = State("ended", rc=None)
            elif what == "preempted":
                runrecord.write_status(d, "preempted", reason="SIGUSR2")
                out[hid] = State("pending", where="BeginTime", restarts=1)
            elif what == "crash":
                out[hid] = State("ended", rc=None)
            elif what == "vanished":
                out[hid] = State("vanished")
            else:
                if what == "running":
                    runrecord.write_status(d, "running")
                out[hid] = State(what, where="n1")
            if out[hid].state in ("ended", "vanished"):
                del self.tracked[hid]
        return out

    def states(self, handles):
        return {h["id"]: State("running") for h in handles if h["id"] in self.live_ids}


@pytest.fixture
def planned(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(mx, "RUNS", str(tmp_path / "runs"), raising=False)
    cfg = write_config(tmp_path / ".config", TINY)
    cfgs = planner.plan(cfg, {"seeds": "1 2"}).runs
    pending, _ = mx.prepare(cfgs, force=False)
    mdir = tmp_path / "matrix"
    mdir.mkdir()
    return pending, str(mdir)


def status(cfg):
    return runrecord.read_status(cfg.out_dir)


def test_states_through_the_seam_settle_every_run(planned):
    cfgs, mdir = planned
    ids = [c.run_id() for c in cfgs]
    plays = {ids[0]: ["pending", "running", "running", "done"],
             ids[1]: ["running", "preempted", "pending", "running", "done"],
             ids[2]: ["running", "crash"],
             ids[3]: ["pending", "vanished"]}
    plays.update({i: ["running", "done"] for i in ids[4:]})
    ex = Fake(plays)
    failed = mx.execute(cfgs, 0, ex, mdir)
    got = {c.run_id(): status(c) for c in cfgs}
    assert got[ids[0]]["status"] == "done" and got[ids[1]]["status"] == "done"
    assert got[ids[2]]["status"] == "failed" and "ended without a final status" in got[ids[2]]["reason"]
    assert got[ids[3]]["status"] == "interrupted" and "cancelled" in got[ids[3]]["reason"]
    assert failed == 2 and sorted(ex.submitted) == sorted(ids), "each run submitted once"
    book = Handles(mdir).latest()
    assert set(book) == set(ids) and all(h["kind"] == "fake" for h in book.values())


def test_a_recorded_live_job_is_adopted_not_started_twice(planned):
    cfgs, mdir = planned
    ids = [c.run_id() for c in cfgs]
    Handles(mdir).record({"run_id": ids[0], "kind": "fake", "id": "old-1"})
    Handles(mdir).record({"run_id": ids[1], "kind": "fake", "id": "old-2"})   # ended meanwhile
    ex = Fake({i: ["running", "done"] for i in ids}, live={"old-1"})
    assert mx.execute(cfgs, 0, ex, mdir) == 0
    assert ids[0] not in ex.submitted and ids[1] in ex.submitted
    assert len(ex.submitted) == len(ids) - 1
    assert all(status(c)["status"] == "done" for c in cfgs)


def test_preempted_past_the_requeues_fails_with_the_reason(planned):
    cfgs, mdir = planned
    ex = Fake({c.run_id(): ["running", "preempted", "crash"] for c in cfgs})
    assert mx.execute(cfgs[:1], 0, ex, mdir) == 1
    st = status(cfgs[0])
    assert st["status"] == "failed" and "MAX_REQUEUES" in st["reason"]


def test_live_handles_and_state_labels(planned):
    cfgs, mdir = planned
    Handles(mdir).record({"run_id": cfgs[0].run_id(), "kind": "fake", "id": "a"})
    Handles(mdir).record({"run_id": cfgs[1].run_id(), "kind": "fake", "id": "b"})
    assert list(mx.live_handles(Fake({}, live={"a"}), mdir)) == [cfgs[0].run_id()]
    assert State("pending", where="Priority").label() == "PENDING(Priority)"
    assert State("running", where="n1", restarts=2).label() == "RUNNING@n1 requeued 2x"
    assert json.loads(json.dumps(Handles(mdir).latest()))
