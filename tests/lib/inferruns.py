"""Helpers of the inference and export tests: tiny finished runs under a private results/
(KNLP_RESULTS), and running lib/infer.py and lib/export.py as a user does."""
import os
import shutil

from conftest import PY, REPO, run_cmd

ENV = {"OMP_NUM_THREADS": "1"}
LENET = ["--max-steps", "30", "--pruning-method", "magnitude", "--target-sparsity", "0.5",
         "--checkpoint-interval", "10"]
GPT2 = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--tokenizer", "byte", "--batch-size", "8", "--max-steps", "20", "--warmup-steps", "3",
        "--lr", "3e-3", "--eval-interval", "10", "--eval-batches", "4",
        "--pruning-method", "magnitude", "--target-sparsity", "0.5"]


def env(results) -> dict:
    return dict(ENV, KNLP_RESULTS=str(results))


def train(results, model: str, run_id: str, args) -> str:
    out = os.path.join(results, "runs", run_id)
    run_cmd([PY, os.path.join(REPO, model, "train.py"), "--out-dir", out,
             "--monitor-interval", "0", *args], env_extra=env(results), check=True)
    return out


def interrupted_copy(run_dir: str, run_id: str) -> str:
    """A copy of a finished run without model.pt: what an interrupted run leaves."""
    dst = os.path.join(os.path.dirname(run_dir), run_id)
    shutil.copytree(run_dir, dst)
    os.unlink(os.path.join(dst, "checkpoints", "model.pt"))
    return dst


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def in_process(monkeypatch, capsys, results, main, argv) -> Result:
    """main(argv) (lib.infer / lib.export) in this process with results/ at `results`:
    a subprocess costs seconds of imports."""
    import lib.runload
    monkeypatch.setattr(lib.runload, "RUNS", os.path.join(results, "runs"))
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return Result(rc, out.out, out.err)


def cli(results, argv, check=False):
    """python <argv...> from the repo with results/ at `results`."""
    return run_cmd([PY, *argv], env_extra=env(results), check=check)
