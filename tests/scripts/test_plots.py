"""The matrix figures show what issue 21 asks: the mean over seeds with its band, the dense
reference and the dashed baseline, within-noise markers, the seed note, per-layer sparsity,
train and eval loss with the schedule, and no GPU-memory bar for CPU runs."""
import json

import matplotlib.collections as mcoll
import pytest

from scripts.engine import plots


def _run(tmp_path, opt, method, sp, seed, acc, device="cpu"):
    rid = f"m_{opt}_{method}_s{sp:g}_seed{seed}-abcd1234"
    d = tmp_path / "runs" / rid
    d.mkdir(parents=True)
    rows = [{"kind": "train", "step": s, "loss": 2.0 / (s + 1) + 0.01 * seed,
             "sparsity_target": min(sp, sp * s / 20)} for s in range(0, 40, 2)]
    rows += [{"kind": "eval", "step": 20, "loss": 0.5}, {"kind": "eval", "step": 40, "loss": 0.3}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"run_id": rid, "status": "done", "model": "m", "optimizer": opt,
            "pruning_method": method, "target_sparsity": sp, "seed": seed, "sparsity": sp,
            "primary_value": acc, "primary_metric": "accuracy", "throughput": 1000.0 + seed,
            "peak_memory_mb": 500.0, "device": device, "unit": "samples",
            "layer_sparsity": {"conv1.weight": sp * 0.5, "fc.weight": sp * 1.2} if sp else {}}


@pytest.fixture
def figures(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "RUNS", str(tmp_path / "runs"))
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, d, name: saved.setdefault(name, fig) and name)
    return saved


def matrix(tmp_path, seeds, device="cpu"):
    rows = []
    for s in seeds:
        rows.append(_run(tmp_path, "adamw", "none", 0.0, s, 98.0 + (s % 2), device))
        rows.append(_run(tmp_path, "adamw", "magnitude", 0.5, s, 97.5 + (s % 2), device))
        rows.append(_run(tmp_path, "adamw", "magnitude", 0.9, s, 90.0 + s, device))
    return rows


def test_several_seeds_get_bands_noise_markers_and_the_noise_floor(tmp_path, figures):
    rows = matrix(tmp_path, (1, 2, 3))
    paths = plots.draw(str(tmp_path), rows, baseline="m_adamw_none_s0_seed1")
    assert paths == list(plots.GRAPHS)
    fig = figures["accuracy_vs_sparsity.png"]
    ax = fig.axes[0]
    assert "3 seeds per cell" in fig._suptitle.get_text() and "noise floor" in fig._suptitle.get_text()
    labels = [line.get_label() for line in ax.get_lines()]
    assert "adamw + magnitude" in labels and "adamw dense" in labels
    assert any(line.get_linestyle() == "--" and "baseline" in line.get_label() for line in ax.get_lines())
    assert any(isinstance(c, mcoll.PolyCollection) for c in ax.collections), "no 95% band"
    # 0.5: -0.5 each seed (paired: no spread... interval [-0.5,-0.5]) ; 0.9: -8,-7,-6 vs base
    noisy = [c for c in ax.collections if "within noise" in str(c.get_label())]
    assert not noisy, "every difference here is consistent across seeds: none within noise"
    layer = figures["layer_sparsity.png"].axes[0]
    heights = sorted(round(p.get_height(), 3) for p in layer.patches)
    assert heights == [45.0, 108.0], "the highest target (0.9) of the one method, per layer"
    curves = figures["training_curves.png"]
    kinds = [line.get_label() for line in curves.axes[0].get_lines()]
    assert any(k.endswith("train") for k in kinds) and any(k.endswith("eval") for k in kinds)
    assert curves.axes[1].get_lines(), "the schedule's sparsity on the second axis"
    assert len(figures["throughput_memory.png"].axes) == 1, "a CPU run has no GPU memory bar"


def test_one_seed_says_so_and_gpu_runs_get_a_memory_bar(tmp_path, figures):
    rows = matrix(tmp_path, (1,), device="cuda")
    rows[1]["primary_value"] = 98.0
    plots.draw(str(tmp_path), rows)
    assert plots.seed_note(plots.stats.cells(rows)).startswith("1 seed: differences below")
    assert "1 seed" in figures["accuracy_vs_sparsity.png"]._suptitle.get_text()
    assert len(figures["throughput_memory.png"].axes) == 2


def test_within_noise_cells_are_marked(tmp_path, figures):
    rows = matrix(tmp_path, (1, 2, 3))
    for r in rows:       # magnitude 0.5 scatters around the dense value: within noise
        if r["target_sparsity"] == 0.5:
            r["primary_value"] = 98.0 + {1: 1.0, 2: -1.0, 3: 0.5}[r["seed"]]
    plots.draw(str(tmp_path), rows, baseline="m_adamw_none_s0_seed1")
    ax = figures["accuracy_vs_sparsity.png"].axes[0]
    assert [c for c in ax.collections if "within noise" in str(c.get_label())]


def test_smoothing_keeps_the_length_and_flattens_noise():
    y = [1.0, 3.0] * 20
    s = plots.smooth(y, 4)
    assert len(s) == len(y) and max(s[5:-5]) - min(s[5:-5]) < 0.6
