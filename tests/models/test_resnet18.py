"""ResNet-18: the CIFAR architecture, its data (shipped digits offline, CIFAR with a clear
error when missing), learning on real digits, and exact resume after SIGKILL."""
import pytest
import torch

from lib import data, vision
from lib.runconfig import ConfigError
from resnet18.config import Config
from resnet18.data import build_datasets
from resnet18.model import ResNet18
from trainrun import (assert_identical, batch_sums, killed_and_resumed, summary, train,
                      train_losses)

ARGS = ["--dataset", "digits", "--width", "8", "--batch-size", "16", "--max-steps", "24",
        "--checkpoint-interval", "8", "--log-interval", "2", "--eval-batches", "8",
        "--optimizer", "adamwprune", "--pruning-method", "state", "--target-sparsity", "0.5",
        "--lr", "3e-3"]


def test_cifar_resnet18_shape():
    m = ResNet18(num_classes=10, width=64)
    assert sum(p.numel() for p in m.parameters()) == 11_173_962      # the CIFAR ResNet-18
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_digits_as_rgb_with_seeded_augmentation():
    train, test = vision.digits_rgb()
    assert len(train) == 1437 and len(test) == 360
    x, y = test[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2]) and 0 <= int(y) < 10
    ds = data.SeededDataset(train, seed=1)
    a, b = ds[5][0], ds[5][0]
    assert torch.equal(a, b), "same (seed, epoch, index): same crop"
    crops = {tuple(ds[5 + e * len(train)][0].flatten()[:200].tolist()) for e in range(8)}
    assert len(crops) > 1, "other epochs draw other crops"


def test_missing_cifar_names_dir_symbol_and_fix(tmp_path):
    cfg = Config(dataset="cifar10", data_dir=str(tmp_path))
    with pytest.raises(ConfigError) as e:
        build_datasets(cfg)
    msg = str(e.value)
    for part in (str(tmp_path / "cifar-10-batches-py"), "CONFIG_DATA_DIR", "CONFIG_DATA_DOWNLOAD",
                 "CONFIG_RESNET18_DATASET_DIGITS"):
        assert part in msg


def test_unknown_dataset_is_rejected():
    with pytest.raises(ConfigError, match="CONFIG_RESNET18_DATASET"):
        build_datasets(Config(dataset="mnist"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("r18a"), tmp_path_factory.mktemp("r18b")
    killed_and_resumed("resnet18", a, b, ARGS, first_ckpt=8)
    return a, b


# Learning is judged on a run long enough that it is unmistakable on any CPU: 24 steps of
# batch 16 moved the loss by 10-20 percent, and which side of a 15 percent bound it landed
# depended on oneDNN's vector path (AVX-512/AMX vs AVX2). 60 steps of batch 32 take the loss
# from 2.2 to ~0.5 and eval accuracy to ~92 percent on both paths (chance: 10).
LEARN_ARGS = ["--dataset", "digits", "--width", "8", "--batch-size", "32", "--max-steps", "60",
              "--checkpoint-interval", "1000", "--log-interval", "5", "--optimizer", "adamw",
              "--lr", "3e-3"]


def test_learns_on_digits(tmp_path):
    train("resnet18", tmp_path, LEARN_ARGS)
    losses = train_losses(tmp_path)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    assert summary(tmp_path)["eval_accuracy"] > 50, "chance is 10 percent"


def test_resume_mid_epoch_is_bit_identical(runs):
    assert_identical(*runs)


def test_device_batches_resume_bit_identical_and_learn(tmp_path, monkeypatch):
    """--data-on-gpu (here on the CPU device: the same code, batched augmentation in the
    training process): SIGKILL after the first checkpoint and resume give the uninterrupted
    run's batches (checksums of the augmented inputs per step) and result bit for bit, and
    the run learns like the worker path does."""
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("KNLP_BATCH_SUMS", "1")
    killed_and_resumed("resnet18", a, b, ARGS + ["--data-on-gpu"], first_ckpt=8)
    monkeypatch.delenv("KNLP_BATCH_SUMS")
    assert batch_sums(a) == batch_sums(b) and sorted(batch_sums(a)) == list(range(1, 25))
    assert_identical(a, b)
    workers = tmp_path / "w"
    train("resnet18", workers, ARGS)
    assert train_losses(a) != train_losses(workers), "a different augmentation stream"
    train("resnet18", tmp_path / "learn", LEARN_ARGS + ["--data-on-gpu"])
    assert summary(tmp_path / "learn")["eval_accuracy"] > 50, "chance is 10 percent"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_under_cuda_graphs_resumes_on_the_same_batches(tmp_path, monkeypatch):
    """Issue 24 on the GPU (scripts/bench/gpu_check_kernels.sh runs it): batches made on the
    GPU, bf16, CUDA graphs (reduce-overhead), SIGKILLed after its first checkpoint and
    resumed: every step sees exactly the uninterrupted run's augmented inputs, and the run
    ends within bf16 noise of its loss."""
    a, b = tmp_path / "a", tmp_path / "b"
    gpu = ["--device", "cuda", "--precision", "bf16", "--compile", "--compile-mode",
           "reduce-overhead", "--data-on-gpu"]
    monkeypatch.setenv("KNLP_BATCH_SUMS", "1")
    killed_and_resumed("resnet18", a, b, ARGS + gpu, first_ckpt=8)
    assert batch_sums(a) == batch_sums(b) and sorted(batch_sums(a)) == list(range(1, 25))
    sa, sb = summary(a), summary(b)
    assert sa["steps"] == sb["steps"] == 24
    assert abs(sa["eval_loss"] - sb["eval_loss"]) < 0.02 * sa["eval_loss"], (sa, sb)
    assert abs(sa["sparsity"] - sb["sparsity"]) < 1e-3
