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


def jpeg_imagenet(root, per_class=12):
    """<root>/imagenet/{train,val}/<2 classes>/*.JPEG of assorted sizes."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 4)):
        for c in ("n01", "n02"):
            d = root / "imagenet" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(36, 80)), int(rng.integers(36, 80))
                img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(img).save(d / f"{i}.JPEG", quality=90)
    return str(root)


DECODE_ARGS = ["--dataset", "imagenet", "--num-classes", "2", "--image-size", "32", "--width", "4",
               "--batch-size", "4", "--max-steps", "8", "--checkpoint-interval", "3",
               "--log-interval", "1", "--eval-batches", "1", "--optimizer", "sgd", "--lr", "0.05"]


def test_gpu_decode_choice_is_checked_and_recorded(tmp_path):
    with pytest.raises(ConfigError, match="CONFIG_RESNET50_DECODE_PIL.*CONFIG_RESNET50_DATASET_IMAGENET"):
        build_datasets(Config(dataset="digits", decode="gpu"))
    with pytest.raises(ConfigError, match="decode"):
        Config(decode="nvjpeg").validate()
    # at its default the field stays out of the run id (ids published before it stay)
    assert "decode" not in Config().semantic_dict()
    assert Config(decode="gpu").run_id() != Config().run_id()
    from lib.vision import EncodedFolder
    train, val = build_datasets(Config(data_dir=jpeg_imagenet(tmp_path), num_classes=2,
                                       decode="gpu", image_size=32))
    assert isinstance(train, EncodedFolder) and train.classes == val.classes
    assert val[0][0].shape == (3, 32, 32)          # evaluation stays on PIL


def test_gpu_decode_through_the_trainer_resumes_bit_identically(tmp_path):
    """The device decode path on the CPU (decode_jpeg there): a run SIGKILLed after its first
    checkpoint and resumed sees the same batches as an uninterrupted one (its losses and
    weights are identical), and the run config records the choice."""
    import json
    args = DECODE_ARGS + ["--data-dir", jpeg_imagenet(tmp_path / "data"), "--decode", "gpu",
                          "--num-workers", "1"]
    a, b = tmp_path / "a", tmp_path / "b"
    killed_and_resumed("resnet50", a, b, args, first_ckpt=3)
    assert_identical(a, b)
    assert json.loads((a / "config.json").read_text())["decode"] == "gpu"
