"""The Kconfig tree and the defconfigs: they load cleanly, every symbol is documented,
and every setting symbol reaches a run-config field."""
import os

import kconfiglib
import pytest

from conftest import REPO, run_cmd
from lib import settings
from lib.runconfig import config_class
from scripts.engine import kconfig as kc
from scripts.engine import plan as planner


@pytest.fixture(scope="module")
def kconf():
    os.environ["srctree"] = REPO
    k = kconfiglib.Kconfig(os.path.join(REPO, "Kconfig"), warn_to_stderr=False)
    assert not k.warnings, k.warnings
    return k


def test_every_visible_symbol_has_help(kconf):
    missing = [n.item.name for n in kconf.node_iter() if isinstance(n.item, kconfiglib.Symbol)
               and n.prompt and not n.help]
    assert not missing, f"symbols without help text: {missing}"


def test_every_setting_symbol_maps_to_a_field(kconf):
    """A symbol that is not a matrix/menu switch must name a config field, or the planner
    would silently ignore it."""
    fields = set()
    for model in settings.models(kconf):
        if os.path.exists(os.path.join(REPO, model, "config.py")):
            cls = config_class(model)
            for f in cls.field_types():
                fields |= {f.upper(), f"{model.upper()}_{f.upper()}"}
                fields |= {f"{model.upper()}_{o.upper()}_{f.upper()}" for o in
                           ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "adamwprune")}
    structural = ("MATRIX_", "MODEL_", "HW_", "EXECUTOR_", "SLURM_", "PRECISION_", "JOBS", "MODELS_DIR")
    orphans = [s.name for s in kconf.unique_defined_syms
               if not s.choice and not s.name.startswith(structural) and s.name not in fields]
    assert not orphans, f"symbols that reach no run-config field: {orphans}"


def test_all_defconfigs_load_without_warnings():
    assert kc.names(), "no defconfigs"
    for name in kc.names():
        kc.load(name)            # raises SystemExit on any warning


def test_knlp_defconfig_names_exist():
    for name in ("default", "lenet5", "lenet5-adamwprune", "lenet5-sgd"):
        assert name in kc.names()


def test_unknown_defconfig_lists_valid_ones(tmp_path):
    p = run_cmd(["make", "--no-print-directory", "defconfig-no-such-thing"])
    assert p.returncode != 0
    assert "no defconfig named 'no-such-thing'" in p.stderr
    assert "lenet5-adamwprune" in p.stderr


def test_make_help_lists_targets_and_variables():
    p = run_cmd(["make", "--no-print-directory", "help"], check=True)
    for word in ("menuconfig", "defconfig-<name>", "dry-run", "continue", "update-graphs",
                 "archive", "TIME=", "BASELINE=", "MODELS=", "JOBS=", "FORCE="):
        assert word in p.stdout


def _config_from(tmp_path, name):
    path = tmp_path / ".config"
    kc.load(name).write_config(str(path))
    return path


def test_set_changes_values_through_kconfig(tmp_path):
    path = _config_from(tmp_path, "gpt2-h100")
    kc.set_values(str(path), ["GPUS=2", "CONFIG_GPT2_MAX_STEPS=300", "MATRIX_OPTIMIZER_SGD=y"])
    p = planner.plan(str(path))
    assert {c.optimizer for c in p.runs} >= {"sgd", "adamw"}
    assert all(c.gpus == 2 and c.max_steps == 300 for c in p.runs)


@pytest.mark.parametrize("assignment, words", [
    ("GPUS=0", "CONFIG_GPUS=0 was rejected: outside its range"),
    ("GPT2_MAX_STEPS=abc", "not a valid value for this int symbol"),
    ("HW_NAME=h100", "has no prompt"),
    ("NO_SUCH_SYMBOL=1", "expected SYMBOL=VALUE with a symbol Kconfig defines"),
])
def test_set_refuses_what_kconfig_refuses_and_keeps_the_file(tmp_path, assignment, words):
    path = _config_from(tmp_path, "gpt2-h100")
    before = path.read_text()
    with pytest.raises(planner.ConfigError, match=words):
        kc.set_values(str(path), [assignment])
    assert path.read_text() == before


def test_set_hiding_values_drops_them_like_olddefconfig(tmp_path):
    path = _config_from(tmp_path, "gpt2-h100")
    kc.set_values(str(path), ["HW_CPU=y"])
    assert "CONFIG_GPU_MEMORY_GB" not in path.read_text()
    with pytest.raises(planner.ConfigError, match="dependencies are not met"):
        kc.set_values(str(path), ["GPUS=2"])


def test_triton_backend_defaults_to_cuda_graphs(kconf):
    """The triton kernel backend is host-bound without CUDA graphs (GPT-2 on the H100: 0.841x
    the torch reference's tokens/s, 0.929x under reduce-overhead): it brings that compile mode
    as its default on one GPU; the torch backend and DDP runs keep inductor's default; an
    explicit choice wins."""
    kconf.load_config(os.path.join(REPO, "defconfigs", "gpt2-h100"))
    assert kconf.syms["COMPILE_MODE"].str_value == "default"
    kconf.syms["KERNEL_BACKEND_TRITON"].set_value(2)
    assert kconf.syms["COMPILE_MODE"].str_value == "reduce-overhead"
    kconf.syms["GPUS"].set_value("2")           # DDP + CUDA graphs: untried, not a default
    assert kconf.syms["COMPILE_MODE"].str_value == "default"
    kconf.syms["GPUS"].set_value("1")
    assert kconf.syms["COMPILE_MODE"].str_value == "reduce-overhead"
    kconf.syms["COMPILE_MODE_DEFAULT"].set_value(2)
    assert kconf.syms["COMPILE_MODE"].str_value == "default"


def test_gpu_jpeg_decode_is_refused_on_the_cpu_preset_by_name(tmp_path):
    """CONFIG_RESNET50_DECODE_GPU depends on a GPU preset: asked for on the CPU preset it is
    an error naming it, its unmet dependency and the fix, in `make menuconfig`'s place a
    comment says why; on a GPU preset it reaches the run config, whose id then differs."""
    path = _config_from(tmp_path, "resnet50")
    before = path.read_text()
    for change in (["RESNET50_DECODE_GPU=y"], ["RESNET50_DATASET_IMAGENET=y", "RESNET50_DECODE_GPU=y"]):
        with pytest.raises(planner.ConfigError) as e:
            kc.set_values(str(path), change)
        for words in ("CONFIG_RESNET50_DECODE_GPU=y was rejected", "!HW_CPU",
                      "pick a preset where they hold or drop the line"):
            assert words in str(e.value)
        assert path.read_text() == before
    path.write_text(before + "CONFIG_RESNET50_DECODE_GPU=y\n")   # by hand in the file
    with pytest.raises(planner.ConfigError, match="CONFIG_RESNET50_DECODE_GPU=y was rejected"):
        planner.plan(str(path))
    k = kc.load("resnet50")
    k.syms["RESNET50_DATASET_IMAGENET"].set_value(2)
    comments = [n.prompt[0] for n in k.node_iter() if n.item == kconfiglib.COMMENT
                and n.prompt and kconfiglib.expr_value(n.dep)]
    assert "GPU JPEG decoding needs a GPU preset (HW_CPU is chosen)" in comments
    gpu = _config_from(tmp_path, "resnet50-h100")
    pil_ids = sorted(c.run_id() for c in planner.plan(str(gpu)).runs)
    kc.set_values(str(gpu), ["RESNET50_DECODE_GPU=y"])
    runs = planner.plan(str(gpu)).runs
    assert {c.decode for c in runs} == {"gpu"} and all(c.to_dict()["decode"] == "gpu" for c in runs)
    # from the defconfig (not a .config holding every value) the workers default to 4: they
    # only read files
    from conftest import write_config
    text = open(os.path.join(REPO, "defconfigs", "resnet50-h100")).read()
    plain = planner.plan(write_config(tmp_path / "a.config", text)).runs
    runs = planner.plan(write_config(tmp_path / "b.config", text + "CONFIG_RESNET50_DECODE_GPU=y\n")).runs
    assert {c.num_workers for c in plain} == {12} and {c.num_workers for c in runs} == {4}
    assert not set(pil_ids) & {c.run_id() for c in runs}
