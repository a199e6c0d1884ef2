"""The asynchronous checkpoint of CUDA state (lib/checkpoint.py AsyncSaver, PinnedPool): the
file holds the state as it was at save(), although training goes on mutating it before the
background thread writes, and the pinned buffers reused by the next save do not change the
file already written. Runs only where a GPU is (scripts/bench/gpu_models.sh runs it on the H100)."""
import pytest
import torch

from lib import checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_async_save_of_cuda_state_is_the_state_at_save(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(1024, 1024, device="cuda")
    state = {"model": {"w": w, "t": w.t()}, "opt": [torch.ones(7, device="cuda")], "step": 3}
    saver = checkpoint.AsyncSaver()
    expect = w.cpu().clone()
    saver.save(str(tmp_path), state, 1)
    w.add_(1.0)                                  # training goes on before the write
    state["opt"][0].mul_(5)
    saver.wait()
    first = torch.load(tmp_path / "ckpt_00000001.pt", weights_only=False)
    assert torch.equal(first["model"]["w"], expect)
    assert torch.equal(first["model"]["t"], expect.t())
    assert torch.equal(first["opt"][0], torch.ones(7))
    saver.save(str(tmp_path), state, 2)          # reuses the pinned buffers
    saver.wait()
    again = torch.load(tmp_path / "ckpt_00000001.pt", weights_only=False)
    second = torch.load(tmp_path / "ckpt_00000002.pt", weights_only=False)
    assert torch.equal(again["model"]["w"], expect)
    assert torch.equal(second["model"]["w"], expect + 1.0)
    assert torch.equal(second["opt"][0], torch.full((7,), 5.0))
    assert saver.pool.buffers and all(b.is_pinned() for b in saver.pool.buffers)
