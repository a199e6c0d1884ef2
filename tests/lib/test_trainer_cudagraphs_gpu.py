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
