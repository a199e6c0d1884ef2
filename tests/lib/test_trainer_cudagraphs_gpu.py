"""CUDA graphs in the trainer (CONFIG_COMPILE_MODE="reduce-overhead"): a tiny GPT-2 with
gradient accumulation trains to the same losses as under the default compile mode, with the
torch reference and with every Linear and the attention through our Triton kernels (custom ops
captured in the graphs). Before lib/trainer.py pre-made the gradients, the second micro-step's
replay overwrote the first one's gradient and the run died ("accessing tensor output of
CUDAGraphs that has been overwritten"). Runs only where a GPU is (scripts/bench/gpu_check_kernels.sh
runs it on the H100)."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def losses(tmp_path, mode: str, backend: str) -> list:
    from scripts.bench.trainer import bench_config, bench_trainer
    cfg = bench_config(True, str(tmp_path), f"{backend}-{mode}", device="cuda", compile=True,
                       compile_mode=mode, kernel_backend=backend,
                       kernel_linear=backend != "torch", max_steps=12, log_interval=1,
                       checkpoint_interval=10 ** 6, eval_interval=10 ** 6)
    assert cfg.grad_accum == 2
    out = bench_trainer(cfg, warm=2)
    torch._dynamo.reset()
    return [loss for _, loss in out["losses"]]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_reduce_overhead_trains_like_default_compile(tmp_path, backend):
    default = losses(tmp_path, "default", backend)
    graphed = losses(tmp_path, "reduce-overhead", backend)
    assert len(default) == len(graphed) == 12
    assert default[-1] < default[0] - 0.3          # it learned something
    assert max(abs(a - b) for a, b in zip(default, graphed)) < 1e-4, (default, graphed)


def test_resnet_under_cuda_graphs_keeps_batchnorm_layout_and_masks(tmp_path):
    """The vision recipe under CUDA graphs (issue 24): ResNet-18, channels_last, bf16, batches
    made on the GPU, magnitude pruning to 50 percent. Against the default compile mode: the
    same losses, the same BatchNorm running statistics (buffers updated inside the graphs),
    the same masks, and the target sparsity reached."""
    from lib import fsio, trainer
    from resnet18.config import Config
    from resnet18.train import SPEC
    got = {}
    for mode in ("default", "reduce-overhead"):
        out = tmp_path / mode
        cfg = Config(dataset="digits", width=8, batch_size=32, max_steps=30, device="cuda",
                     precision="bf16", compile=True, compile_mode=mode, data_on_gpu=True,
                     pruning_method="magnitude", target_sparsity=0.5, pruning_frequency=5,
                     log_interval=1, checkpoint_interval=10 ** 6, eval_interval=10 ** 6,
                     monitor_interval=0.0, out_dir=str(out)).validate()
        assert trainer.run(SPEC, trainer.resolve_paths(cfg)) == 0
        torch._dynamo.reset()
        rows = fsio.read_jsonl(str(out / "metrics.jsonl"))
        got[mode] = ([r["loss"] for r in rows if r.get("kind") == "train"],
                     fsio.read_json(str(out / "summary.json")),
                     torch.load(out / "checkpoints" / "model.pt"))
    (la, sa, wa), (lb, sb, wb) = got["default"], got["reduce-overhead"]
    assert len(la) == len(lb) == 30 and la[-1] < la[0]
    assert max(abs(a - b) for a, b in zip(la, lb)) < 2e-2, (la, lb)
    assert abs(sa["sparsity"] - 0.5) < 1e-3 and abs(sb["sparsity"] - 0.5) < 1e-3
    bn = [k for k in wa if k.endswith("running_mean")]
    assert bn and all(int(wb[k.replace("running_mean", "num_batches_tracked")]) == 30 for k in bn)
    for k in bn:
        assert wb[k].abs().sum() > 0, f"{k} never updated under CUDA graphs"
        torch.testing.assert_close(wb[k], wa[k], rtol=5e-2, atol=5e-2)
    masks_a = {k: (v == 0) for k, v in wa.items() if k.endswith("weight") and v.dim() > 1}
    agree = sum((masks_a[k] == (wb[k] == 0)).float().mean().item() for k in masks_a) / len(masks_a)
    assert agree > 0.98, f"masks agree on {agree:.3f} of the weights"


def block_run(tmp_path, name, mode, kernels_on):
    from gpt2.train import SPEC as GPT2
    from lib import fsio, trainer
    from scripts.bench.trainer import bench_config
    cfg = bench_config(True, str(tmp_path), name, device="cuda", compile=True,
                       compile_mode=mode, kernel_backend="triton" if kernels_on else "torch",
                       kernel_linear=kernels_on, pruning_method="magnitude",
                       target_sparsity=0.75, pruning_block_size=32, pruning_warmup=0.0,
                       pruning_ramp_end=0.3, pruning_frequency=2, max_steps=30,
                       log_interval=1, checkpoint_interval=10 ** 6, eval_interval=10 ** 6,
                       monitor_interval=0.0)
    assert trainer.run(GPT2, trainer.resolve_paths(cfg)) == 0
    torch._dynamo.reset()
    rows = fsio.read_jsonl(f"{cfg.out_dir}/metrics.jsonl")
    return ([r["loss"] for r in rows if r.get("kind") == "train"],
            fsio.read_json(f"{cfg.out_dir}/summary.json"))


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_block_pruned_gpt2_on_the_block_sparse_kernels(tmp_path, mode):
    """Issue 23: 32x32 block pruning to 75 percent with every Linear through the Triton
    kernels, under both compile modes. Up to the ramp's end (step 9) the layers run the dense
    kernels with dense dW, so the losses equal the torch reference's (dense matmuls, masked
    gradients) to the kernels' rounding; from the final mask on the pruned layers take the
    block-sparse op with dW on the nonzero blocks only (re-captured under CUDA graphs: the
    run before this fix crashed with "tensor(s) in the cudagraph pool not tracked as
    outputs"), and the run still ends where the reference does."""
    ref, sref = block_run(tmp_path, "ref", "default", kernels_on=False)
    got, s = block_run(tmp_path, f"sparse-{mode}", mode, kernels_on=True)
    assert len(got) == len(ref) == 30 and ref[-1] < ref[0] - 0.3
    bs = s["block_sparse"]
    assert bs["from_step"] <= 10 and len(bs["layers"]) == 8, bs
    assert "block_sparse" not in sref and abs(s["sparsity"] - 0.75) < 0.01
    before = max(abs(a - b) for a, b in zip(got[:9], ref[:9]))
    after = max(abs(a - b) for a, b in zip(got, ref))
    assert before < 2e-3, (got, ref)
    assert after < 2e-2, (got, ref)
    assert abs(s["eval_loss"] - sref["eval_loss"]) < 5e-3 * sref["eval_loss"], (s, sref)
