"""The GPU benchmark scripts' CPU smoke modes: each runs end to end on a tiny model and writes
the numbers its GPU run reports (the GPU runs themselves go through the device tool)."""
import json
import subprocess
import sys

import pytest

from scripts.bench.gpt2_kernels import curve_gap

pytestmark = pytest.mark.bench   # the measurement tools' group: pytest -m bench


def run(args):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_bench_trainer_smoke(tmp_path):
    out = tmp_path / "b.json"
    run(["scripts/bench/trainer.py", "--smoke", "--steps", "20", "--warm", "5", "--bare-steps",
         "6", "--bare-warm", "2", "--work", str(tmp_path / "w"), "--out", str(out)])
    r = json.loads(out.read_text())
    t = r["trainer"]
    assert t["window_steps"] == [10, 20] and t["tokens_per_s"] > 0
    assert r["bare_fused"]["tokens_per_s"] > 0 and r["ratio_trainer_vs_bare_fused"] > 0
    assert len(t["checkpoint_s_each"]) == 3          # every 5 steps, not after the last
    assert t["losses"][-1][1] < t["losses"][0][1]


def test_bench_gpt2_kernels_smoke_curves_agree(tmp_path):
    out, md = tmp_path / "k.json", tmp_path / "k.md"
    run(["scripts/bench/gpt2_kernels.py", "--smoke", "--steps", "30", "--warm", "10",
         "--work", str(tmp_path / "w"), "--out", str(out), "--md", str(md)])
    r = json.loads(out.read_text())
    assert set(r["runs"]) == {"torch", "cpu"} and r["curves_agree"]
    assert r["runs"]["cpu"]["kernel_linear"] and r["runs"]["cpu"]["kernel_backend"] == "cpu"
    assert r["curve_gap"]["cpu"] < 1e-3 and r["speed_ratio"] > 0
    assert "| 30 |" in md.read_text()


def test_curve_gap_compares_common_steps_after_skip():
    a = [[10, 5.0], [20, 4.0], [30, 3.0]]
    b = [[10, 9.0], [20, 4.1], [30, 2.5], [40, 1.0]]
    assert curve_gap(a, b, skip=10) == pytest.approx(0.5)
    with pytest.raises(SystemExit):
        curve_gap(a, b, skip=30)


def test_bench_gpt2_kernels_takes_the_noise_of_an_earlier_report(tmp_path):
    earlier = {"steps": 30, "noise": 0.25, "runs": {"torch": {}, "torch-noise": {}}}
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    out = tmp_path / "k.json"
    run(["scripts/bench/gpt2_kernels.py", "--smoke", "--steps", "30", "--warm", "10",
         "--no-noise-run", "--noise-from", str(tmp_path / "earlier.json"),
         "--work", str(tmp_path / "w"), "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["noise"] == 0.25 and r["tolerance"] == pytest.approx(0.75)
    assert r["noise_from"].endswith("earlier.json")
    bad = subprocess.run([sys.executable, "scripts/bench/gpt2_kernels.py", "--smoke", "--steps",
                          "20", "--warm", "10", "--no-noise-run", "--noise-from",
                          str(tmp_path / "earlier.json"), "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a report with a noise run of 20 steps" in bad.stderr


def test_bench_kernels_cpu_report(tmp_path):
    """`make bench-kernels` on the CPU: every row carries its torch time, ratio and float64
    error, and the report re-renders from its JSON (--render)."""
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    run(["scripts/bench/kernel_ops.py", "--device", "cpu", "--ops", "matmul", "--threads", "1",
         "--out", str(out), "--md", str(md)])
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {(r["case"], r["pass"]) for r in rows} >= {("cpu linear", "fwd"),
                                                      ("cpu linear", "fwd+bwd")}
    for r in rows:
        assert r["ms"] > 0 and r["torch_ms"] > 0 and r["ratio"] == pytest.approx(
            r["torch_ms"] / r["ms"], rel=1e-3)
        assert r["err"] < 1e-5                    # fp32 against float64
    again = tmp_path / "again.md"
    run(["scripts/bench/kernel_ops.py", "--render", str(out), "--md", str(again)])
    assert again.read_text() == md.read_text()


def test_bench_kernels_summary_judges_timed_calls_and_graph_rows_apart():
    """A host-bound timed call (0.4x) and the same product replayed from a CUDA graph (0.95x)
    are two verdicts, not one averaged or the better one picked."""
    from scripts.bench.kernel_ops import summary

    def row(ps, ratio, case="gpt2 attn.c_proj"):
        return {"op": "matmul", "case": case, "layout": "linear", "pass": ps, "ratio": ratio}
    lines = summary([row("fwd", 0.4), row("fwd graph", 0.95),
                     row("fwd", 0.97, "resnet50 fc"), row("fwd graph", 0.35, "resnet50 fc")])
    assert any("GPT-2 shapes fwd, timed calls: worst 0.4x" in x and "MISSED" in x for x in lines)
    assert any("GPT-2 shapes fwd, CUDA-graph replay: worst 0.95x" in x and "met" in x
               for x in lines)
    assert any("ResNet GEMMs fwd, CUDA-graph replay: worst 0.35x" in x and "MISSED" in x
               for x in lines)


def test_bench_kernels_times_the_shapes_it_is_given(tmp_path):
    """--shapes (make bench-kernels SHAPES=...) replaces the grid: each MxKxN product in both
    layouts and through a training step without a bias and with one, odd sizes included; a
    malformed shape is refused."""
    out = tmp_path / "s.json"
    run(["scripts/bench/kernel_ops.py", "--device", "cpu", "--ops", "matmul", "--threads", "1",
         "--shapes", "33x17x9", "5X64x1000", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    got = sorted((tuple(r["shape"]), r["layout"], r["pass"]) for r in rows)
    want = sorted([(s, lay, "fwd") for s in ((33, 17, 9), (5, 64, 1000))
                   for lay in ("matmul", "linear")] +
                  [(s, lay, "fwd+bwd") for s in ((33, 17, 9), (5, 64, 1000))
                   for lay in ("linear", "linear+bias")])
    assert got == want
    assert all(r["err"] < 1e-5 and r["ratio"] > 0 for r in rows)
    bad = subprocess.run([sys.executable, "scripts/bench/kernel_ops.py", "--device", "cpu",
                          "--shapes", "256x2048"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "'256x2048' is not MxKxN" in bad.stderr


def test_bench_pruned_smoke(tmp_path):
    """scripts/bench/pruned.py on the CPU: a dense and a 16x16 block-pruned tiny GPT-2 through
    the trainer and `make infer`'s loader. The pruned run reaches its sparsity, takes the
    block-sparse path after its final mask, and the report's ratios are the runs' own rates
    divided by the dense run's."""
    out = tmp_path / "p"
    run(["-m", "scripts.bench.pruned", "--smoke", "--parts", "train", "infer", "--sparsity",
         "0.75", "--steps", "20", "--seconds", "0.05", "--out", str(out)])
    r = json.loads((out / "pruned.json").read_text())
    dense, block = r["runs"]["dense"], r["runs"]["block75"]
    assert abs(block["sparsity"] - 0.75) < 0.02 and dense["sparsity"] == 0
    assert block["block_sparse"]["layers"] and block["block_sparse"]["from_step"] <= 8
    assert r["train_speedup"]["block75"] == pytest.approx(
        block["tokens_per_s"] / dense["tokens_per_s"])
    for mode in ("eager", "compiled"):
        rates = r["infer_tokens_per_s"][mode]
        assert rates["dense"] > 0 and r["infer_speedup"][mode]["block75"] == pytest.approx(
            rates["block75"] / rates["dense"])
    assert r["losses"] == {"dense": dense["eval_loss"], "block75": block["eval_loss"]}
    assert (out / "loss_vs_speed.png").stat().st_size > 1000


def test_bench_pruned_merges_a_later_part_into_an_earlier_report():
    from scripts.bench.pruned import merged
    a = {"meta": {"commit": "a"}, "losses": {"dense": 2.5, "block90": 2.4},
         "runs": {"dense": {"tokens_per_s": 1.0}}, "train_speedup": {"block90": 1.1}}
    b = {"meta": {"commit": "b"}, "losses": {"dense": 2.6},
         "runs": {"dense": {"wall_s": 3}, "state": {"tokens_per_s": 2.0}},
         "prune_overhead": {"state": 0.01}}
    m = merged(a, b)
    assert m["losses"] == {"dense": 2.6, "block90": 2.4}
    assert m["runs"]["dense"] == {"tokens_per_s": 1.0, "wall_s": 3} and "state" in m["runs"]
    assert m["train_speedup"] == {"block90": 1.1} and m["prune_overhead"] == {"state": 0.01}
    assert m["meta"]["commit"] == "b" and m["meta"]["parts"] == [{"commit": "b"}]


def test_bench_block_conv_smoke(tmp_path):
    """scripts/bench/block_conv.py on the CPU: every one of ResNet-50's 53 convs as its im2col
    GEMM (K = C_in*kh*kw), the totals their sums, the estimates the totals' ratios."""
    run(["-m", "scripts.bench.block_conv", "--smoke", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "block_conv.json").read_text())
    e, t = r["estimate"], r["today"]
    assert len(e["convs"]) == 53
    stem = e["convs"][0]
    assert stem["kernel"] == "7x7/2" and stem["K"] == 3 * 49 and stem["M"] == 2 * 32 * 32
    for k, v in e["total"].items():
        assert v == pytest.approx(sum(c[k] for c in e["convs"])) and v > 0
    assert e["implicit_gemm_speedup"] == pytest.approx(
        e["total"]["conv_ms"] / e["total"]["sparse_gemm_ms"])
    assert t["train_speedup"] == pytest.approx(
        t["dense"]["train_ms"] / t["pruned"]["train_ms"])
