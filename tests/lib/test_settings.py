"""One owner per fact: every Kconfig setting's unconditional default, choices and range equal
its run-config field's (so `python <model>/train.py` trains what `make` plans on the
unconditional defaults), --help shows the Kconfig help, and the optimizer x pruning rule of
lib/runconfig.py is the one Kconfig's dependencies express."""
import dataclasses
import itertools
import os

import kconfiglib
import pytest

from lib import cli, settings
from lib.paths import REPO
from lib.runconfig import (OPTIMIZERS, PRUNING_METHODS, ConfigError, RunConfig,
                           combination_reason, config_class, coerce, meta)
from scripts.engine import plan as planner

# Symbols whose value is a fact of the hardware preset, not of the recipe: the dataclass
# holds what a run by hand on this machine means (the CPU, no GPU memory check), Kconfig
# what the GPU presets mean. TRACKIO: a run by hand does not write into the matrices' shared
# trackio store unless asked (--trackio); `make` runs log there by default.
HARDWARE_FACTS = {"DEVICE": "cpu", "GPU_MEMORY_GB": 0, "TRACKIO": False}


@pytest.fixture(scope="module")
def kconf():
    return settings.parse_kconfig()


def _expr_value(v):
    return v.str_value if isinstance(v, kconfiglib.Symbol) else v


def unconditional_default(kconf, sym):
    """The value Kconfig gives `sym` when no hardware or other condition applies: its
    unconditional `default`, or, for a string derived from a choice (`default "x" if C_X`),
    the value of the choice's own unconditional default; bools without one are n."""
    defaults = [d for n in sym.nodes for d in n.orig_defaults]
    for v, cond in defaults:
        if cond is kconf.y:
            return v.name if isinstance(v, kconfiglib.Symbol) and v.is_constant else _expr_value(v)
    members = {c: _expr_value(v) for v, c in defaults
               if isinstance(c, kconfiglib.Symbol) and c.choice}
    if members:
        choice = next(iter(members)).choice
        chosen = [d for n in choice.nodes for d, c in n.orig_defaults if c is kconf.y]
        assert chosen, f"the choice of CONFIG_{sym.name} has no unconditional default"
        return members[chosen[0]]
    return "n" if sym.orig_type == kconfiglib.BOOL else None


def kconfig_values(sym) -> set:
    return {_expr_value(v) for n in sym.nodes for v, c in n.orig_defaults}


def model_fields(kconf):
    for model in settings.models(kconf):
        cls = config_class(model)
        for f in dataclasses.fields(cls):
            sym = settings.symbol(kconf, model, f.name)
            if sym is not None:
                yield model, cls, f.name, sym


def test_models_are_the_kconfig_registry(kconf):
    assert settings.models(kconf) == ["lenet5", "resnet18", "resnet50", "gpt2"]
    with pytest.raises(ConfigError, match="has no nosuch/config.py"):
        config_class("nosuch")


def test_every_kconfig_default_equals_the_dataclass_default(kconf):
    checked, wrong = 0, []
    for model, cls, name, sym in model_fields(kconf):
        want = getattr(cls(), name)
        if sym.name in HARDWARE_FACTS:
            assert want == HARDWARE_FACTS[sym.name], (model, name)
            continue
        value = unconditional_default(kconf, sym)
        got = coerce(name, value if value is not None else "", cls.field_types()[name])
        checked += 1
        if got != want:
            wrong.append(f"{model}.{name}: CONFIG_{sym.name} defaults to {value!r}, "
                         f"{cls.__module__}.Config to {want!r}")
    assert not wrong, "\n".join(wrong)
    assert checked > 120       # 4 models x ~35 settings: the walk found the symbols


def test_every_choice_and_range_matches(kconf):
    wrong = []
    for model, cls, name, sym in model_fields(kconf):
        m = meta(cls, name)
        has_prompt = any(n.prompt for n in sym.nodes)
        if sym.orig_type == kconfiglib.STRING and not has_prompt and sym.name not in HARDWARE_FACTS:
            if set(m["choices"]) != kconfig_values(sym):      # a choice's derived value
                wrong.append(f"{model}.{name}: Kconfig offers {sorted(kconfig_values(sym))}, "
                             f"the dataclass {sorted(m['choices'])}")
        ranges = [(int(lo.str_value), int(hi.str_value)) for n in sym.nodes
                  for lo, hi, c in n.orig_ranges if c is sym.kconfig.y]
        if ranges and tuple(m["range"]) != ranges[0] and sym.name not in HARDWARE_FACTS:
            wrong.append(f"{model}.{name}: CONFIG_{sym.name} range {ranges[0]}, the dataclass "
                         f"{m['range']}")
    assert not wrong, "\n".join(wrong)


def test_matrix_seeds_default_is_the_dataclass_seed(kconf):
    assert unconditional_default(kconf, kconf.syms["MATRIX_SEEDS"]) == str(RunConfig().seed)


def test_matrix_lists_are_the_dataclass_choices(kconf):
    for prefix, field in (("MATRIX_OPTIMIZER_", "optimizer"), ("MATRIX_PRUNING_", "pruning_method")):
        names = [s.name[len(prefix):].lower() for s in kconf.unique_defined_syms
                 if s.name.startswith(prefix)]
        assert tuple(names) == meta(RunConfig, field)["choices"]


def test_metadata_validates(kconf):
    with pytest.raises(ConfigError, match=r"pruning_scope='band': unknown pruning scope; choose one of global, layer"):
        RunConfig(pruning_scope="band").validate()
    with pytest.raises(ConfigError, match=r"n_layer=0: must be in \[1, 128\]"):
        config_class("gpt2")(n_layer=0).validate()
    with pytest.raises(ConfigError, match=r"dataset='mnist': unknown dataset; choose one of cifar10"):
        config_class("resnet18")(dataset="mnist").validate()


def test_combination_rule_is_the_kconfig_dependency(kconf):
    """With only optimizer o in the matrix, Kconfig lets MATRIX_PRUNING_m be set exactly when
    combination_reason(o, m) is None."""
    for opt, method in itertools.product(OPTIMIZERS, PRUNING_METHODS):
        for o in OPTIMIZERS:
            kconf.syms[f"MATRIX_OPTIMIZER_{o.upper()}"].set_value("y" if o == opt else "n")
        sym = kconf.syms[f"MATRIX_PRUNING_{method.upper()}"]
        sym.set_value("y")
        allowed = sym.str_value == "y"
        assert allowed == (combination_reason(opt, method) is None), (opt, method)
        if not allowed:
            with pytest.raises(ConfigError, match=combination_reason(opt, method)[:30]):
                RunConfig(optimizer=opt, pruning_method=method, target_sparsity=0.5).validate()
    kconf.unset_values()


def test_help_comes_from_kconfig(kconf, capsys):
    text = cli.help_text(config_class("gpt2"))
    # a model symbol's help, the shared menu's help, a choice's help, with the symbol named
    assert "12 for GPT-2 124M, 24 for 350M" in text
    assert "CONFIG_GPT2_N_LAYER" in text
    assert "Where torchvision looks for MNIST" in text
    assert "How text becomes tokens" in text
    assert "(default 12" in text


def test_every_field_has_a_help_text(kconf):
    """--help shows a field's Kconfig help where a symbol sets it for that model, else the
    help in its metadata: no field goes undescribed."""
    none = [f"{model}.{f.name}" for model in settings.models(kconf)
            for f in dataclasses.fields(config_class(model))
            if settings.symbol(kconf, model, f.name) is None
            and not meta(config_class(model), f.name)["help"]]
    assert not none, f"fields with no help anywhere: {none}"


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "defconfigs"))))
def test_a_planned_run_is_the_hand_run_but_for_what_its_preset_changes(name):
    """Every run a defconfig plans equals `python <model>/train.py` with the matrix's
    optimizer/method/sparsity flags, except fields the preset changes on purpose: a symbol
    the defconfig sets, a conditional default that applies (a hardware preset's), or a
    per-optimizer symbol (CONFIG_<MODEL>_SGD_LR)."""
    path = os.path.join(REPO, "defconfigs", name)
    if name.endswith(".md"):
        pytest.skip("not a defconfig")
    kconf = planner.load_kconfig(path)
    with open(path) as f:
        assigned = {line.split("=")[0][len("CONFIG_"):] for line in f if line.startswith("CONFIG_")}
    matrix = ("optimizer", "pruning_method", "target_sparsity", "trackio_project", "models_dir")
    unexplained = []
    for run in planner.plan(path).runs:
        hand = config_class(run.model)()
        for field in run.field_types():
            if field in matrix or getattr(run, field) == getattr(hand, field):
                continue
            names = [f"{run.model}_{run.optimizer}_{field}".upper(),
                     f"{run.model}_{field}".upper(), field.upper()]
            sym = next((kconf.syms[n] for n in names if planner._set(kconf, n) is not None), None)
            if sym is None:
                unexplained.append(f"{run.model}.{field}: no symbol set it")
            elif not (sym.name in assigned or sym.name == names[0] or sym.name in HARDWARE_FACTS
                      or str(unconditional_default(kconf, sym)) != sym.str_value):
                unexplained.append(f"{run.model}.{field}={getattr(run, field)!r} from "
                                   f"CONFIG_{sym.name}, hand run {getattr(hand, field)!r}")
    assert not unexplained, "\n".join(unexplained)
