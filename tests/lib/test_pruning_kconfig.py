"""lib/Kconfig.optim and lib/Kconfig.pruning: they parse cleanly, every setting is a
RunConfig field, and every choice gives a value that RunConfig.validate accepts."""
import os

import kconfiglib
import pytest

from lib.runconfig import ConfigError, RunConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAGMENTS = ("lib/Kconfig.optim", "lib/Kconfig.pruning")


@pytest.fixture(scope="module")
def kconf(tmp_path_factory):
    top = tmp_path_factory.mktemp("kconfig") / "Kconfig"
    top.write_text('mainmenu "optim and pruning"\nsource "scripts/engine/Kconfig.matrix"\n'
                   + "".join(f'source "{f}"\n' for f in FRAGMENTS))
    os.environ["srctree"] = REPO
    k = kconfiglib.Kconfig(str(top), warn_to_stderr=False)
    assert not k.warnings, k.warnings
    return k


def own_symbols(k):
    return [s for s in k.unique_defined_syms
            if any(n.filename in FRAGMENTS for n in s.nodes)]


def test_settings_are_fields(kconf):
    fields = set(RunConfig.field_types())
    orphans = [s.name for s in own_symbols(kconf)
               if not s.choice and s.name.lower() not in fields]
    assert not orphans, f"symbols that name no RunConfig field: {orphans}"


def test_every_choice_value_validates(kconf):
    on = ("MATRIX_OPTIMIZER_ADAMWPRUNE", "MATRIX_OPTIMIZER_ADAMWSPAM", "MATRIX_OPTIMIZER_SGD",
          "MATRIX_PRUNING_MOVEMENT", "MATRIX_PRUNING_STATE")
    choices = [c for c in kconf.unique_choices if any(n.filename in FRAGMENTS for n in c.nodes)]
    assert len(choices) == 6        # 5 pruning choices and the LR schedule
    for choice in choices:
        for option in choice.syms:
            kconf.load_config(os.devnull)
            for name in on:
                kconf.syms[name].set_value(2)
            option.set_value(2)
            values = {s.name.lower(): s.str_value for s in own_symbols(kconf)
                      if not s.choice and s.str_value != ""}
            # the option is named after its field and value: STATE_SCORE_SQRT_MOMENTUM,
            # PRUNING_RAMP_CUBIC_IN for "cubic-in"
            field = [f for f, v in values.items()
                     if option.name == f"{f}_{v}".upper().replace("-", "_")]
            assert field, f"{option.name} sets no field to {option.name.lower()}'s value"
            cfg = RunConfig.from_dict({**values, "optimizer": "adamwprune",
                                       "pruning_method": "state", "target_sparsity": 0.5})
            try:
                cfg.validate()
            except ConfigError as e:
                pytest.fail(f"{option.name} gives an invalid config: {e}")
