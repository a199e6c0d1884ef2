"""ResNet-50: torchvision's architecture exactly, the 32x32 stem, its data (digits,
ImageFolder, clear errors), learning on real digits, and exact resume after SIGKILL."""
import pytest
import torch
from torch.utils.data import DataLoader

from lib.runconfig import ConfigError
from lib.build import build_training
from resnet50.config import Config
from resnet50.data import build_datasets, example_batch
from resnet50.model import ResNet50
from resnet50.train import SPEC
from trainrun import assert_identical, killed_and_resumed

ARGS = ["--dataset", "digits", "--width", "4", "--batch-size", "16", "--max-steps", "14",
        "--checkpoint-interval", "5", "--log-interval", "2", "--eval-batches", "4",
        "--optimizer", "sgd", "--lr", "0.05"]


def test_same_network_as_torchvision_resnet50():
    torchvision = pytest.importorskip("torchvision")
    ref, ours = torchvision.models.resnet50(weights=None), ResNet50()
    assert [(k, v.shape) for k, v in ref.state_dict().items()] == \
        [(k, v.shape) for k, v in ours.state_dict().items()]
    ours.load_state_dict(ref.state_dict())
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_cifar_stem_keeps_32x32_resolution():
    m = ResNet50(num_classes=100, width=4, stem="cifar")
    assert m.conv1.kernel_size == (3, 3) and isinstance(m.maxpool, torch.nn.Identity)
    feats = m.layer1(m.relu(m.bn1(m.conv1(torch.randn(1, 3, 32, 32)))))
    assert feats.shape[-2:] == (32, 32)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    cfg = Config(dataset="cifar100")
    x, y = example_batch(cfg, 2)
    assert x.shape == (2, 3, 32, 32) and int(y.max()) < 100
    assert example_batch(Config(), 1)[0].shape == (1, 3, 224, 224)


def test_imagefolder_pipeline_and_errors(tmp_path):
    pytest.importorskip("torchvision")
    from PIL import Image
    cfg = Config(data_dir=str(tmp_path), num_classes=2)
    with pytest.raises(ConfigError) as e:
        build_datasets(cfg)
    for part in (str(tmp_path / "imagenet" / "train"), "CONFIG_DATA_DIR",
                 "CONFIG_RESNET50_DATASET_DIGITS"):
        assert part in str(e.value)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            d = tmp_path / "imagenet" / split / cls
            d.mkdir(parents=True)
            Image.new("RGB", (300, 260), (10, 200, 30)).save(d / "a.png")
    train, val = build_datasets(cfg)
    assert train[0][0].shape == (3, 224, 224) and val[1][0].shape == (3, 224, 224)
    with pytest.raises(ConfigError, match="CONFIG_RESNET50_NUM_CLASSES"):
        build_datasets(Config(data_dir=str(tmp_path)))      # 2 class folders, model for 1000


def test_learns_on_digits():
    """A tiny ResNet-50 fits a batch of real (augmented) digits with the trainer's
    optimizer: from scratch, this deep narrow net needs more steps than a CPU test can
    afford to generalise, so fitting one batch is the check that it learns at all."""
    torch.set_num_threads(1)
    cfg = Config(dataset="digits", width=4, lr=3e-3).validate()
    model, optimizer, _ = build_training(SPEC, cfg, total_steps=12, device="cpu")
    x, y = next(iter(DataLoader(build_datasets(cfg)[0], batch_size=32)))
    losses = []
    for _ in range(12):
        loss = SPEC.task.loss(model, (x, y))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    killed_and_resumed("resnet50", a, b, ARGS, first_ckpt=5)
    assert_identical(a, b)
