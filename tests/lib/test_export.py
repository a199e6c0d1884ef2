"""lib/export.py: a run's pruned weights, masks and config in one .safetensors file that
loads back bit-exactly, rebuilds a model with the run's eval metric, and keeps tied weights
tied."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from gpt2 import prepare
from inferruns import GPT2, LENET, cli, in_process, interrupted_copy, train
from lenet5.infer import INFER
from lib import export, infer, pruning


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, train(results, "lenet5", "lenet5_tiny-exp", LENET)


def test_export_round_trips_bit_exactly_and_masks_are_the_zeros(lenet):
    results, run = lenet
    p = cli(results, ["-m", "lib.export", "--run", "lenet5_tiny"], check=True)
    path = os.path.join(run, "model.safetensors")
    assert path in p.stdout and "masks (from weights)" in p.stdout
    state_dict, masks, config = export.load(path)
    ref = torch.load(os.path.join(run, "checkpoints", "model.pt"))
    assert list(state_dict) == list(ref)
    for k, v in ref.items():
        assert state_dict[k].dtype == v.dtype and torch.equal(state_dict[k], v), k
    with open(os.path.join(run, "config.json")) as f:
        assert config == json.load(f)
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    assert set(masks) == set(summary["layer_sparsity"])
    for name, m in masks.items():
        assert m.dtype == torch.bool and torch.equal(m, ref[name] != 0)
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned / sum(m.numel() for m in masks.values()) == summary["sparsity"]
    meta = export.metadata(path)
    assert meta["run_id"] == "lenet5_tiny-exp" and meta["model"] == "lenet5"
    assert float(meta["sparsity"]) == pytest.approx(summary["sparsity"], abs=1e-6)
    assert len(meta["git_commit"]) == 40 and meta["masks_from"] == "weights"


def test_the_documented_snippet_rebuilds_the_runs_eval_metric(lenet):
    results, run = lenet
    assert export.main(["--run", run]) == 0
    from lenet5.train import SPEC
    state_dict, masks, config = export.load(os.path.join(run, "model.safetensors"))
    model = SPEC.build_model(SPEC.config_class.from_dict(config))
    model.load_state_dict(state_dict)
    model.eval()
    cfg = SPEC.config_class.from_dict(config)
    metrics, _ = infer.evaluate(model, SPEC.task, SPEC.build_datasets(cfg)[1], cfg, torch.device("cpu"))
    with open(os.path.join(run, "summary.json")) as f:
        assert metrics["accuracy"] == json.load(f)["eval_accuracy"]
    assert pruning.measure_sparsity(model, cfg)["zeros"] == sum(int((~m).sum()) for m in masks.values())


def test_interrupted_run_exports_the_pruners_masks(lenet, tmp_path, monkeypatch, capsys):
    results, run = lenet
    interrupted_copy(run, "lenet5_tiny-cut")
    out = tmp_path / "x.safetensors"
    p = in_process(monkeypatch, capsys, results, export.main,
                   ["--run", "lenet5_tiny-cut", "--out", str(out)])
    assert p.returncode == 0 and "masks (from pruner)" in p.stdout
    state_dict, masks, _ = export.load(str(out))
    meta = export.metadata(str(out))
    assert meta["masks_from"] == "pruner" and meta["step"] == "20"
    assert meta["source"] == os.path.join("checkpoints", "ckpt_00000020.pt")
    for name, m in masks.items():
        assert not state_dict[name][~m].any(), name
    assert in_process(monkeypatch, capsys, results, export.main,
                      ["--run", "lenet5_tiny-cut", "--out", str(tmp_path)]).returncode == 0
    assert (tmp_path / "lenet5_tiny-cut.safetensors").exists()


def test_export_errors(lenet, tmp_path, monkeypatch, capsys):
    results, _ = lenet
    p = in_process(monkeypatch, capsys, results, export.main, ["--run", "zzz"])
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no run 'zzz'" in p.stderr
    other = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a knlp export"):
        export.load(str(other))


def test_gpt2_export_keeps_the_tied_head_tied(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    data = tmp_path_factory.mktemp("gpt2data")
    prepare.prepare("stdlib", str(data), "byte", log=lambda m: None)
    run = train(results, "gpt2", "gpt2_tiny-exp", GPT2 + ["--max-steps", "4", "--data-dir", str(data)])
    assert export.main(["--run", run]) == 0
    state_dict, masks, config = export.load(os.path.join(run, "model.safetensors"))
    ref = torch.load(os.path.join(run, "checkpoints", "model.pt"))
    assert list(state_dict) == list(ref) and all(torch.equal(state_dict[k], ref[k]) for k in ref)
    assert state_dict["lm_head.weight"] is state_dict["transformer.wte.weight"]
    assert "lm_head.weight" not in masks and len(masks) == 8
    from gpt2.train import SPEC
    model = SPEC.build_model(SPEC.config_class.from_dict(config))
    model.load_state_dict(state_dict)
    assert model.lm_head.weight is model.transformer.wte.weight
