"""The planner: .config -> resolved, hashed run configs, deterministic, with clear errors."""
import csv
import glob

import pytest

from conftest import write_config
from lib.runconfig import ConfigError
from scripts.engine import kconfig as kc
from scripts.engine import plan as planner


def plan_of(tmp_path, lines, **over):
    return planner.plan(write_config(tmp_path / ".config", lines), over)


def test_default_matrix_runs_and_skips(tmp_path):
    p = plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/default").read())
    ids = [c.run_id() for c in p.runs]
    assert len(ids) == 13 and len(set(ids)) == 13
    combos = {(c.optimizer, c.pruning_method, c.target_sparsity) for c in p.runs}
    assert ("adamwprune", "state", 0.7) in combos and ("sgd", "movement", 0.5) in combos
    assert not any(c.pruning_method == "state" and c.optimizer != "adamwprune" for c in p.runs)
    skipped = " ".join(w for w, _ in p.skipped)
    assert "sgd state" in skipped and "adamwprune magnitude" in skipped
    # the same .config always gives the same run ids
    assert [c.run_id() for c in plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/default").read()).runs] == ids


def test_default_matrix_ids_are_the_archived_ones(tmp_path):
    """Refactoring the settings changes no run: the default matrix plans the run ids of its
    committed archive (results/archive/*-default/summary.csv)."""
    archived = sorted(glob.glob(f"{planner.REPO}/results/archive/*-default/summary.csv"))
    assert archived, "no archived default matrix"
    with open(archived[0]) as f:
        want = sorted(row["run_id"] for row in csv.DictReader(f))
    p = plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/default").read())
    assert sorted(c.run_id() for c in p.runs) == want


def test_symbols_reach_fields_with_per_optimizer_override(tmp_path):
    p = plan_of(tmp_path, 'CONFIG_MATRIX_OPTIMIZER_SGD=y\nCONFIG_LENET5_SGD_LR="0.07"\n'
                          'CONFIG_LENET5_LR="3e-3"\nCONFIG_LENET5_EPOCHS=4\nCONFIG_MATRIX_SEEDS="9"\n')
    by_opt = {c.optimizer: c for c in p.runs}
    assert by_opt["sgd"].lr == 0.07 and by_opt["adamw"].lr == 3e-3
    assert by_opt["adamw"].epochs == 4 and by_opt["adamw"].seed == 9


def test_time_override_changes_run_ids(tmp_path):
    a = plan_of(tmp_path, "")
    b = plan_of(tmp_path, "", time_budget=30.0)
    assert b.runs[0].time_budget == 30.0 and a.runs[0].run_id() != b.runs[0].run_id()


@pytest.mark.parametrize("lines, match", [
    ('CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="0.5 1.2"\n',
     "MATRIX_SPARSITY_LEVELS: 1.2 is outside"),
    ('CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="half"\n', "not a number"),
    ("# CONFIG_MODEL_LENET5 is not set\n", "selects no model"),
    ("# CONFIG_MATRIX_OPTIMIZER_ADAMW is not set\n", "selects no optimizer"),
    ('CONFIG_LENET5_LR="fast"\n', "CONFIG_LENET5_LR"),
])
def test_bad_configs_name_the_symbol(tmp_path, lines, match):
    with pytest.raises(ConfigError, match=match):
        plan_of(tmp_path, lines)


def test_symbol_kconfig_rejects_is_an_error(tmp_path):
    bad = tmp_path / ".config"
    bad.write_text("CONFIG_LENET5_EPOCHS=0\nCONFIG_NO_SUCH_SYMBOL=y\n")
    with pytest.raises(ConfigError, match="make menuconfig|olddefconfig"):
        planner.plan(str(bad))


def test_missing_config_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match="make defconfig-"):
        planner.plan(str(tmp_path / "nope"))


@pytest.mark.parametrize("name", kc.names())
def test_every_defconfig_plans(tmp_path, name):
    p = plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/{name}").read())
    assert p.runs and p.name == name


def test_seeds_are_a_matrix_dimension(tmp_path):
    one = plan_of(tmp_path, 'CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="0.5"\n')
    three = plan_of(tmp_path, 'CONFIG_MATRIX_PRUNING_MAGNITUDE=y\nCONFIG_MATRIX_SPARSITY_LEVELS="0.5"\n'
                              'CONFIG_MATRIX_SEEDS="1 2 3"\n')
    assert len(three.runs) == 3 * len(one.runs)
    assert [c.seed for c in three.runs[:3]] == [1, 2, 3]     # one cell's seeds side by side
    ids = [c.run_id() for c in three.runs]
    assert ids[1].startswith("lenet5_adamw_none_s0_seed2-") and len(set(ids)) == len(ids)
    # the seed-1 run is the single-seed matrix's run (same hash), only its id shows the seed
    assert three.runs[0].config_hash() == one.runs[0].config_hash()
    assert "_seed" not in one.runs[0].run_id()
    # SEEDS= on the command line replaces the list
    over = plan_of(tmp_path, 'CONFIG_MATRIX_SEEDS="1 2 3"\n', seeds="4 5")
    assert sorted({c.seed for c in over.runs}) == [4, 5]


@pytest.mark.parametrize("text, words", [
    ('"1 x"', "'x' is not an integer seed"), ('"1 1"', "seed 1 is listed twice"),
    ('""', "CONFIG_MATRIX_SEEDS is empty"), ('"-3"', "outside"),
])
def test_bad_seed_lists_name_the_symbol(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        plan_of(tmp_path, f"CONFIG_MATRIX_SEEDS={text}\n")


def test_every_defconfig_keeps_its_run_ids(tmp_path):
    """A setting added later (runconfig.LATER) leaves every preset's run ids as they were:
    tests/scripts/defconfig_run_ids.json holds them. A change that means to give a preset
    new runs updates that file in the same commit, saying why."""
    import json
    with open(f"{planner.REPO}/tests/scripts/defconfig_run_ids.json") as f:
        pinned = json.load(f)
    now = {n: sorted(c.run_id() for c in plan_of(tmp_path, open(
        f"{planner.REPO}/defconfigs/{n}").read()).runs) for n in kc.names()}
    changed = sorted(n for n in pinned if now.get(n) != pinned[n])
    assert not changed, f"run ids changed for {changed}"
    assert sorted(now) == sorted(pinned), "a defconfig was added or removed: pin its run ids"


# What defconfigs/lenet5-knlp changes, the original knlp's LeNet-5 recipe
# (docs/results-lenet5.md lists each against its source line in mcgrof/knlp)
KNLP_RECIPE = {"batch_size": 64, "lr": 1e-3, "lr_schedule": "constant", "batch_norm": True,
               "pruning_ramp": "cubic-in", "pruning_warmup": 0.4545, "pruning_ramp_end": 0.8,
               "pruning_frequency": 50, "prune_head": True}


def test_lenet5_knlp_differs_from_the_default_only_in_the_listed_recipe(tmp_path):
    knlp = plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/lenet5-knlp").read())
    default = plan_of(tmp_path, open(f"{planner.REPO}/defconfigs/default").read())
    ours = {(c.optimizer, c.pruning_method, c.target_sparsity): c for c in default.runs}
    assert [(c.optimizer, c.pruning_method, c.target_sparsity) for c in knlp.runs] == [
        ("adamw", "none", 0.0), ("adamw", "magnitude", 0.7)]
    for run in knlp.runs:
        base = ours[(run.optimizer, run.pruning_method, run.target_sparsity)]
        diff = {f: getattr(run, f) for f in run.field_types()
                if getattr(run, f) != getattr(base, f) and f != "trackio_project"}
        assert diff == KNLP_RECIPE, run.run_id()
        assert run.run_id() != base.run_id()
    # each setting is in the docs' difference table
    doc = open(f"{planner.REPO}/docs/results-lenet5.md").read()
    missing = [f for f in KNLP_RECIPE if f"`{f}`" not in doc]
    assert not missing, f"docs/results-lenet5.md does not list {missing}"
