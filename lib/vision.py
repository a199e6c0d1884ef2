"""Image data sets of the ResNets (resnet18, resnet50), each as (train, eval) map-style
datasets of (image [3, H, W] float32, label):

- digits:    scikit-learn's shipped digits (lib/digits.py) as 3x32x32 images, random crop
             (pad 4) for training; the offline real data of CPU runs and tests.
- cifar10 / cifar100: torchvision's CIFAR under <data_dir>, random crop 32 pad 4 +
             horizontal flip + normalisation (the standard CIFAR pipeline).
- imagenet:  torchvision ImageFolder under <data_dir>/imagenet/{train,val}/<class>/*,
             RandomResizedCrop + flip for training, Resize(size/0.875) + CenterCrop eval;
             with decode="gpu" the training split is EncodedFolder (the files' bytes),
             decoded and augmented on the device by lib/gpu_data.DecodedBatches.

Random augmentation runs in __getitem__ and draws from torch's global RNG (torchvision's
transforms do too): lib/data.SeededDataset seeds it per (seed, epoch, index), so augmented
batches do not depend on worker count and a resumed run is bit-identical.
torchvision is imported only for the torchvision data sets (~3 s per process).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lib import digits, gpu_data
from lib.runconfig import ConfigError

NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
CIFAR = {  # name: (torchvision class, folder, mean, std)
    "cifar10": ("CIFAR10", "cifar-10-batches-py",
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR100", "cifar-100-python",
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class CroppedTensors(Dataset):
    """In-memory images with a random crop of their own size from a copy padded by `pad`
    pixels of `fill`, and an optional random horizontal flip (torch's global RNG)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, pad: int = 4, fill: float = 0.0,
                 flip: bool = False):
        self.x, self.y, self.pad, self.fill, self.flip = x, y, pad, fill, flip

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        if self.pad:
            h, w = img.shape[-2:]
            padded = F.pad(img, (self.pad,) * 4, value=self.fill)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            img = padded[:, top:top + h, left:left + w]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.y[i]


def digits_rgb(augment: bool = True):
    """Digits at 3x32x32: random crop with 4 pixels of blank padding for training (no flip:
    a mirrored digit is another symbol); the eval split as it is."""
    x, y = digits.images(size=32, channels=3)
    train, test = digits.split(x, y)
    if augment:
        train = CroppedTensors(*train.tensors, pad=4, fill=float(x.min()))  # min = blank paper
    return train, test


def _missing(what: str, where: str, symbol: str, extra: str = "") -> ConfigError:
    return ConfigError(
        f"{what} not found under {where}{extra}; put it there, or point CONFIG_DATA_DIR "
        f"(--data-dir) at the folder that holds it, or enable CONFIG_DATA_DOWNLOAD "
        f"(--data-download) on a machine with network; {symbol}_DIGITS (--dataset digits) "
        f"runs offline (docs/data.md)")


def cifar(name: str, data_dir: str, download: bool, symbol: str):
    """CIFAR-10/100 with the standard pipeline; symbol is the model's dataset choice
    prefix (e.g. CONFIG_RESNET18_DATASET), named in the missing-data error."""
    from torchvision import datasets, transforms
    cls, folder, mean, std = CIFAR[name]
    norm = transforms.Normalize(mean, std)
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.ToTensor(), norm])
    try:
        train = getattr(datasets, cls)(data_dir, train=True, transform=train_tf, download=download)
        test = getattr(datasets, cls)(data_dir, train=False, transform=eval_tf, download=download)
    except RuntimeError as e:
        raise _missing(f"{cls} ({e})", os.path.join(data_dir, folder), symbol,
                       " (the python version from https://www.cs.toronto.edu/~kriz/cifar.html)"
                       ) from None
    return train, test


class EncodedFolder(Dataset):
    """An ImageFolder's files as they are on disk: item i is (file i's bytes as a uint8
    tensor, its class), in ImageFolder's order; an index is taken mod the length (the
    sampler's e * N + i). Nothing is decoded: DataLoader workers only read."""

    def __init__(self, root: str):
        from torchvision.datasets import folder
        self.root = root
        self.classes, self.class_to_idx = folder.find_classes(root)
        self.samples = folder.make_dataset(root, self.class_to_idx, folder.IMG_EXTENSIONS)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[int(i) % len(self.samples)]
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8), label


def imagefolder(data_dir: str, image_size: int, num_classes: int, symbol: str,
                decode: str = "pil"):
    """ImageNet layout: <data_dir>/imagenet/train/<class>/*.JPEG and .../val/<class>/*.
    decode "gpu": the training split as EncodedFolder (evaluation stays on PIL)."""
    from torchvision import datasets, transforms
    root = os.path.join(data_dir, "imagenet")
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, split)):
            raise _missing("ImageNet (ImageFolder layout)", os.path.join(root, split), symbol,
                           f" (expected {root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_tf = transforms.Compose([transforms.Resize(round(image_size / 0.875)),   # 224 -> 256
                                  transforms.CenterCrop(image_size), transforms.ToTensor(), norm])
    train = (EncodedFolder(os.path.join(root, "train")) if decode == "gpu" else
             datasets.ImageFolder(os.path.join(root, "train"), transform=train_tf))
    test = datasets.ImageFolder(os.path.join(root, "val"), transform=eval_tf)
    if len(train.classes) != num_classes or test.classes != train.classes:
        raise ConfigError(f"{root}: train has {len(train.classes)} classes and val "
                          f"{len(test.classes)}, the model is built for {num_classes}; make the "
                          f"two folders hold the same classes and set the class count "
                          f"({symbol.replace('_DATASET', '_NUM_CLASSES')}, --num-classes)")
    return train, test


def device_source(dataset: str, train) -> gpu_data.Source:
    """The training split as a lib/gpu_data.Source, for CONFIG_<MODEL>_DATA_ON_GPU: CIFAR's
    uint8 arrays with the standard pipeline's crop, flip and normalisation, or the digits'
    tensors with their crop."""
    if isinstance(train, CroppedTensors):
        return gpu_data.Source(train.x, train.y, scale=1.0, pad=train.pad, fill=train.fill,
                               flip=train.flip)
    if dataset in CIFAR and hasattr(train, "data"):
        _, _, mean, std = CIFAR[dataset]
        images = torch.from_numpy(train.data).permute(0, 3, 1, 2).contiguous()
        return gpu_data.Source(images, torch.as_tensor(train.targets), scale=1.0 / 255,
                               mean=mean, std=std, pad=4, fill=0.0, flip=True)
    raise ConfigError(f"data_on_gpu: the {dataset} training set is not held in memory (an "
                      f"image folder is decoded per file); turn CONFIG_<MODEL>_DATA_ON_GPU off "
                      f"(--no-data-on-gpu) for it")
