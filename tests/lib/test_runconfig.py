import dataclasses

import pytest

from lib.runconfig import ConfigError, RunConfig


def test_hash_is_deterministic_and_ignores_where_things_go():
    a = RunConfig(model="lenet5", optimizer="adamw")
    b = RunConfig(model="lenet5", optimizer="adamw", out_dir="/x", models_dir="/y", num_workers=4)
    assert a.run_id() == b.run_id()
    c = RunConfig(model="lenet5", optimizer="adamw", lr=2e-3)
    assert c.run_id() != a.run_id()
    assert a.run_id().startswith("lenet5_adamw_none_s0-")


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean lr"):
        RunConfig.from_dict({"lrr": 0.1})


def test_types_are_coerced_and_bad_values_named():
    cfg = RunConfig.from_dict({"lr": "2e-3", "epochs": "3", "compile": "y"})
    assert cfg.lr == 2e-3 and cfg.epochs == 3 and cfg.compile is True
    with pytest.raises(ConfigError, match="lr='fast'"):
        RunConfig.from_dict({"lr": "fast"})


@pytest.mark.parametrize("kw, match", [
    (dict(target_sparsity=1.0, pruning_method="magnitude"), "target_sparsity"),
    (dict(target_sparsity=-0.1), "target_sparsity"),
    (dict(optimizer="adamx"), "optimizer=.adamx.: unknown optimizer; choose one of sgd, adam"),
    (dict(optimizer="sgd", pruning_method="state", target_sparsity=0.5), "adamwprune"),
    (dict(optimizer="adamwprune", pruning_method="magnitude", target_sparsity=0.5), "state"),
    (dict(pruning_method="magnitude", target_sparsity=0.0), "needs a target"),
])
def test_impossible_combinations_are_rejected(kw, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig(model="m", **kw).validate()


def test_compile_mode_is_checked_and_not_part_of_the_run_id():
    from lib.runconfig import ConfigError, RunConfig
    base = RunConfig(compile=True).validate()
    graphs = RunConfig(compile=True, compile_mode="reduce-overhead").validate()
    assert graphs.run_id() == base.run_id()      # how graphs run, not what they compute
    with pytest.raises(ConfigError, match="compile_mode='fast'.*reduce-overhead"):
        RunConfig(compile_mode="fast").validate()


def test_trainer_passes_the_compile_mode_to_torch_compile(tmp_path, monkeypatch):
    import torch
    from lenet5.config import Config
    from lenet5.train import SPEC
    from lib import trainer
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: (calls.append(kw), model)[1])
    cfg = Config(compile=True, compile_mode="reduce-overhead", max_steps=2, batch_size=16,
                 monitor_interval=0, out_dir=str(tmp_path / "run"),
                 data_dir=str(tmp_path / "data")).validate()
    assert trainer.run(SPEC, trainer.resolve_paths(cfg)) == 0
    assert calls == [{"mode": "reduce-overhead"}]
    assert trainer.compile_options(dataclasses.replace(cfg, compile_mode="default")) == {}


def test_a_sparsity_without_a_method_and_a_method_without_a_sparsity_are_errors():
    """--target-sparsity 0.7 alone used to train dense without a word."""
    with pytest.raises(ConfigError) as e:
        RunConfig(target_sparsity=0.7).validate()
    assert "--pruning-method" in str(e.value) and "CONFIG_MATRIX_PRUNING_" in str(e.value)
    with pytest.raises(ConfigError) as e:
        RunConfig(pruning_method="magnitude").validate()
    assert "--target-sparsity" in str(e.value) and "CONFIG_MATRIX_SPARSITY_" in str(e.value)
    RunConfig(pruning_method="magnitude", target_sparsity=0.7).validate()


def test_a_later_setting_enters_the_hash_only_when_set():
    """data_on_gpu came after run ids were published: off, it leaves every id as it was."""
    from lib.runconfig import LATER
    base = RunConfig(model="lenet5")
    assert "data_on_gpu" in LATER and "data_on_gpu" not in base.semantic_dict()
    on = RunConfig(model="lenet5", data_on_gpu=True)
    assert on.semantic_dict()["data_on_gpu"] is True and on.run_id() != base.run_id()


def test_a_later_model_field_enters_only_the_hash_of_its_model_when_set():
    """batch_norm is lenet5's own LATER field: off, it is not hashed (the archived default
    matrix keeps its ids: tests/scripts/test_plan.py); on, the id changes; a model without
    the field hashes as before."""
    from lenet5.config import Config as LeNet5Config
    from lib.runconfig import LATER
    off = LeNet5Config()
    assert "batch_norm" in LATER and "batch_norm" not in off.semantic_dict()
    on = LeNet5Config(batch_norm=True)
    assert on.semantic_dict()["batch_norm"] is True and on.run_id() != off.run_id()
    gpt2 = RunConfig(model="gpt2")
    assert "batch_norm" not in gpt2.semantic_dict() and len(gpt2.config_hash()) == 8
