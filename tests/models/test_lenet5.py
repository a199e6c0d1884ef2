"""LeNet-5's optional BatchNorm (the original knlp's layout): where it sits, and that it is
neither pruned nor decayed."""
import torch
from torch import nn

from lenet5.config import Config
from lenet5.model import LeNet5
from lib import optim, pruning


def test_batch_norm_follows_each_convolution_and_is_not_pruned_or_decayed():
    plain, bn = LeNet5(), LeNet5(batch_norm=True)
    kinds = [type(m) for m in bn.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
                     nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    # 2 * (6 + 16) BatchNorm weights and biases on top of the plain model's 61,706
    assert sum(p.numel() for p in plain.parameters()) == 61706
    assert sum(p.numel() for p in bn.parameters()) == 61706 + 2 * (6 + 16)
    assert bn(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    cfg = Config(batch_norm=True)
    shapes = lambda m: [tuple(p.shape) for _, p in pruning.prunable_parameters(m, cfg)]  # noqa: E731
    assert shapes(bn) == shapes(plain)
    decay, no_decay = optim.param_groups(bn, 1e-4)
    norm_params = {id(p) for m in bn.modules() if isinstance(m, nn.BatchNorm2d)
                   for p in m.parameters()}
    assert norm_params <= {id(p) for p in no_decay["params"]}
    assert not norm_params & {id(p) for p in decay["params"]}
