"""LeNet-5 (LeCun et al. 1998) for 1x32x32 inputs, with ReLU and max-pooling.

batch_norm=True puts a BatchNorm2d after each convolution (conv, BN, ReLU, pool), as the
original knlp's LeNet-5 does (defconfigs/lenet5-knlp, docs/results-lenet5.md)."""
import torch.nn as nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, batch_norm: bool = False):
        super().__init__()
        norm = (lambda c: [nn.BatchNorm2d(c)]) if batch_norm else (lambda c: [])
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), *norm(6), nn.ReLU(), nn.MaxPool2d(2),      # 6x28x28 -> 6x14x14
            nn.Conv2d(6, 16, 5), *norm(16), nn.ReLU(), nn.MaxPool2d(2),    # 16x10x10 -> 16x5x5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
