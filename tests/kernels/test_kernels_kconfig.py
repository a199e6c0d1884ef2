"""kernels/Kconfig parses with kconfiglib, its symbols match the RunConfig fields, and the
triton backend disappears on CPU-only hardware presets."""
from pathlib import Path

import pytest

kconfiglib = pytest.importorskip("kconfiglib")
ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path, hw_cpu: bool):
    top = tmp_path / "Kconfig"
    top.write_text('mainmenu "kernels test"\n\nconfig HW_CPU\n\tbool "CPU only"\n\n'
                   f'source "{ROOT / "kernels" / "Kconfig"}"\n')
    kconf = kconfiglib.Kconfig(str(top), warn_to_stderr=False)
    kconf.syms["HW_CPU"].set_value(2 if hw_cpu else 0)
    return kconf


def test_parses_without_warnings(tmp_path):
    kconf = load(tmp_path, hw_cpu=False)
    assert kconf.warnings == []
    assert kconf.syms["KERNEL_BACKEND"].str_value == "torch"
    assert kconf.syms["KERNEL_LINEAR"].str_value == "n"


def test_symbols_are_upper_cased_runconfig_fields(tmp_path):
    from lib.runconfig import RunConfig, meta
    kconf = load(tmp_path, hw_cpu=False)
    fields = {f.upper() for f in RunConfig.__dataclass_fields__}
    assert {"KERNEL_BACKEND", "KERNEL_LINEAR"} <= fields
    assert kconf.syms["KERNEL_BACKEND"].type == kconfiglib.STRING
    assert not kconf.syms["KERNEL_BACKEND"].nodes[0].prompt      # hidden, derived
    for backend in meta(RunConfig, "kernel_backend")["choices"]:
        sym = kconf.syms[f"KERNEL_BACKEND_{backend.upper()}"]
        if sym.visibility:
            sym.set_value(2)
            assert kconf.syms["KERNEL_BACKEND"].str_value == backend


def test_triton_hidden_on_cpu_hardware(tmp_path):
    kconf = load(tmp_path, hw_cpu=True)
    assert kconf.syms["KERNEL_BACKEND_TRITON"].visibility == 0
    assert kconf.syms["KERNEL_BACKEND_CPU"].set_value(2)
    assert kconf.syms["KERNEL_BACKEND"].str_value == "cpu"


def test_style_tabs_help_and_width():
    text = (ROOT / "kernels" / "Kconfig").read_text()
    assert 'menu "Kernels"' in text and text.rstrip().endswith('endmenu # "Kernels"')
    for line in text.splitlines():
        assert len(line.expandtabs(8)) <= 72, line
        assert not line.startswith(" "), f"indent with tabs: {line!r}"
    kconf = kconfiglib.Kconfig(str(ROOT / "kernels" / "Kconfig"), warn=False)
    for node in kconf.node_iter():
        if isinstance(node.item, kconfiglib.Symbol) and node.prompt:
            assert node.help and "docs/kernels.md" in node.help, node.item.name
