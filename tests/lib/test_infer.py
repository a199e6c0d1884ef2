"""lib/infer.py and <model>/infer.py on tiny finished runs: the eval metric is the summary's,
sparsity and speed are reported, errors are one line naming the run and the fix, an
interrupted run is used from its newest checkpoint, GPT-2 generates deterministically."""
import json
import os
import re
import shutil

import pytest
import torch

import kernels
from kernels import reference as ref
from gpt2 import prepare
from inferruns import GPT2, LENET, cli, in_process, interrupted_copy, train
from lenet5.infer import INFER
from lib import infer
from lib.runload import load_run


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    run = train(results, "lenet5", "lenet5_tiny-run", LENET)
    return results, run


def summary(run):
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)


def test_infer_reports_the_summarys_metric_sparsity_and_speed(lenet):
    results, run = lenet
    p = cli(results, ["lenet5/infer.py", "--run", "lenet5_tiny-r", "--speed-seconds", "0.1"],
            check=True)
    s = summary(run)
    acc = float(re.search(r"^eval: accuracy ([\d.]+)", p.stdout, re.M).group(1))
    assert abs(acc - s["eval_accuracy"]) <= 1e-6, p.stdout
    assert f"sparsity: {s['sparsity']:.4f}" in p.stdout
    assert re.search(r"loaded model \(torch, dense matmuls\) +[\d,]+ samples/s", p.stdout)
    assert "no sparse kernel used" in p.stdout
    assert "model.pt from" in p.stdout and "(done, step 30/30)" in p.stdout


def test_in_process_eval_is_the_trainers_exactly(lenet):
    run = load_run(lenet[1], INFER)
    _, eval_ds = INFER.spec.build_datasets(run.cfg)
    metrics, sums = infer.evaluate(run.model, INFER.spec.task, eval_ds, run.cfg, run.device)
    s = summary(lenet[1])
    assert metrics["accuracy"] == s["eval_accuracy"]
    assert abs(metrics["loss"] - s["eval_loss"]) <= 1e-6     # thread count: summation order
    assert run.sparsity["sparsity"] == s["sparsity"]


def test_make_style_entry_point_dispatches_by_the_runs_model(lenet):
    results, _ = lenet
    p = cli(results, ["-m", "lib.infer", "--run", "lenet5_tiny-run", "--speed-seconds", "0"],
            check=True)
    assert "eval: accuracy" in p.stdout and "speed on" not in p.stdout


def one_line_error(p):
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def test_errors_are_one_line_naming_the_run_and_the_fix(lenet, monkeypatch, capsys):
    results, run = lenet
    msg = one_line_error(cli(results, ["lenet5/infer.py", "--run", "nosuchrun"]))
    assert "'nosuchrun'" in msg and "unique prefix" in msg

    def call(main, *argv):
        return in_process(monkeypatch, capsys, results, main, list(argv))
    lenet_main = lambda argv: infer.main(INFER, argv)         # noqa: E731
    assert "nosuchrun" in one_line_error(call(lenet_main, "--run", "nosuchrun"))
    empty = os.path.join(results, "runs", "lenet5_tiny-empty")
    os.makedirs(empty)
    shutil.copy(os.path.join(run, "config.json"), empty)
    try:
        msg = one_line_error(call(lenet_main, "--run", "lenet5_tiny"))
        assert "ambiguous" in msg and "lenet5_tiny-empty" in msg and "lenet5_tiny-run" in msg
        msg = one_line_error(call(lambda argv: infer.main(None, argv), "--run", "lenet5_tiny-e"))
        assert "lenet5_tiny-empty has no weights" in msg and "train.py --config" in msg
    finally:
        shutil.rmtree(empty)
    from gpt2.infer import INFER as G
    msg = one_line_error(call(lambda argv: infer.main(G, argv), "--run", "lenet5_tiny-run"))
    assert "is a lenet5 run" in msg and "lenet5/infer.py" in msg
    msg = one_line_error(call(lenet_main, "--run", "lenet5_tiny-run", "--prompt", "x",
                              "--speed-seconds", "0"))
    assert "not a language model" in msg


def test_interrupted_run_uses_its_newest_checkpoint(lenet):
    results, run = lenet
    dst = interrupted_copy(run, "lenet5_tiny-cut")
    try:
        p = cli(results, ["lenet5/infer.py", "--run", "lenet5_tiny-cut", "--speed-seconds", "0"],
                check=True)
        assert "checkpoint of step 20 from" in p.stdout and "ckpt_00000020.pt" in p.stdout
        loaded = load_run(dst, INFER)
        masks, where = loaded.masks()
        assert where == "pruner" and loaded.step == 20
        params = dict(loaded.model.named_parameters())
        for name, m in masks.items():
            assert not params[name].detach()[~m].any(), f"{name}: nonzero where pruned"
    finally:
        shutil.rmtree(dst)


def test_block_sparse_path_is_timed_against_a_dense_copy(lenet):
    run = load_run(lenet[1], INFER)
    run.cfg.pruning_block_size = 4
    batch = [torch.randn(8, 1, 32, 32), torch.zeros(8, dtype=torch.long)]
    lines = infer.speed(run, INFER.spec.task, batch, 0.02)
    assert "block-sparse path (cpu backend, 4x4 blocks; not used by the run)" in "\n".join(lines)
    kernels.swap_linear(run.model, sparse_block_size=4)
    run.cfg.kernel_linear, run.cfg.kernel_backend = True, "cpu"
    kernels.set_backend("cpu")
    try:
        with torch.no_grad():      # whole zero tiles (the cpu route's are 32x32 for 4x4 blocks)
            for m in list(run.model.modules())[:-1]:
                if isinstance(m, kernels.Linear):
                    m.weight.copy_(ref.prune_blocks(m.weight, 32, 0.75))
        assert kernels.sync_block_layouts(run.model)
        text = "\n".join(infer.speed(run, INFER.spec.task, batch, 0.02))
    finally:
        kernels.set_backend("torch")
    assert "loaded model (block-sparse kernels.Linear, cpu backend, 4x4 blocks)" in text
    assert "dense copy (torch, dense matmuls)" in text and "the run's block-sparse path" in text


# -----------------------------------------------------------------------------
# GPT-2

@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    data = tmp_path_factory.mktemp("gpt2data")
    prepare.prepare("stdlib", str(data), "byte", log=lambda m: None)
    return results, train(results, "gpt2", "gpt2_tiny-run", GPT2 + ["--data-dir", str(data)])


def test_gpt2_generates_n_tokens_deterministically(gpt2_run):
    results, run = gpt2_run
    argv = ["gpt2/infer.py", "--run", "gpt2_tiny", "--prompt", "def main(", "--tokens", "12",
            "--speed-seconds", "0", "--no-eval", "--temperature", "0.9", "--top-k", "20",
            "--seed", "5"]
    p = cli(results, argv, check=True)
    assert "generated 12 tokens (temperature 0.9, top-k 20, seed 5):\ndef main(" in p.stdout
    from gpt2.infer import INFER as G
    loaded = load_run(run, G)
    tok = G.tokenizer(loaded.cfg)
    text, ids = infer.complete(loaded, tok, "def main(", 12, 0.9, 20, seed=5)
    assert len(ids) == 12 and all(0 <= i < 256 for i in ids) and text == tok.decode(ids)
    assert p.stdout.rstrip("\n").endswith("def main(" + text.rstrip("\n")), p.stdout
    assert infer.complete(loaded, tok, "def main(", 12, 0.9, 20, seed=5) == (text, ids)
    greedy = infer.complete(loaded, tok, "def main(", 12, 0.0, 0, seed=1)
    assert infer.complete(loaded, tok, "def main(", 12, 0.0, 0, seed=2) == greedy
    assert len(greedy[1]) == 12


def test_gpt2_eval_is_the_summarys(gpt2_run):
    results, run = gpt2_run
    p = cli(results, ["gpt2/infer.py", "--run", "gpt2_tiny", "--speed-seconds", "0.1",
                      "--tokens", "4"], check=True)
    ppl = float(re.search(r"^eval: perplexity ([\d.]+)", p.stdout, re.M).group(1))
    assert abs(ppl - summary(run)["eval_perplexity"]) <= 1e-6 * ppl, p.stdout
    assert "tokens/s" in p.stdout and "generated 4 tokens (greedy)" in p.stdout
