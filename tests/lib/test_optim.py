"""lib/optim.py: optimizer choice, weight decay on weights only, grad clip, SPAM."""
import io
import math

import pytest
import torch
from torch import nn

from lib import optim
from lib.runconfig import OPTIMIZERS, RunConfig


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared 2-core box
    yield
    torch.set_num_threads(n)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_only_on_weights(name):
    model = small_model()
    opt = optim.build_optimizer(model, RunConfig(optimizer=name, weight_decay=0.5, lr=0.1))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == 0.5 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert all(p.ndim < 2 for p in groups["no_decay"]["params"])
    assert len(groups["no_decay"]["params"]) == 4  # 2 biases, LayerNorm weight and bias
    # an actual step with zero gradients: biases and norm parameters do not move
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(model.parameters(), before):
        if p.ndim < 2:
            assert torch.equal(p, b), "weight decay reached a bias or norm parameter"
        else:
            assert not torch.equal(p, b), "weight decay did not reach a weight"


def test_optimizer_classes_and_bases():
    model = small_model()
    build = lambda **kw: optim.build_optimizer(model, RunConfig(**kw))  # noqa: E731
    sgd = build(optimizer="sgd", momentum=0.8)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.8
    assert type(build(optimizer="adam")) is torch.optim.Adam
    assert type(build(optimizer="adamw")) is torch.optim.AdamW
    adv = build(optimizer="adamwadv")
    assert type(adv) is torch.optim.AdamW and adv.param_groups[0]["amsgrad"]
    assert type(build(optimizer="adamwspam")) is optim.AdamWSPAM
    for base, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("adamwspam", optim.AdamWSPAM)):
        assert type(build(optimizer="adamwprune", adamwprune_base=base)) is cls
    assert build(optimizer="adamwprune", adamwprune_base="adamwadv").param_groups[0]["amsgrad"]
    opt = build(optimizer="adam", lr=0.02, beta1=0.8, beta2=0.95)
    assert all(g["lr"] == 0.02 and g["betas"] == (0.8, 0.95) for g in opt.param_groups)
    with pytest.raises(ValueError, match="--optimizer"):
        build(optimizer="lion")


def test_effective_grad_clip():
    clip = lambda **kw: optim.effective_grad_clip(RunConfig(**kw))  # noqa: E731
    assert clip(optimizer="adamw") == 0.0
    assert clip(optimizer="adamwadv") == 1.0
    assert clip(optimizer="adamwprune", adamwprune_base="adamwadv") == 1.0
    assert clip(optimizer="adamwprune", adamwprune_base="adamw") == 0.0
    assert clip(optimizer="adamwadv", grad_clip=0.3) == 0.3
    assert clip(optimizer="sgd", grad_clip=2.0) == 2.0


# -----------------------------------------------------------------------------
# SPAM

def spam_setup(**kw):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(10, 10))
    opt = optim.AdamWSPAM([p], lr=1e-2, **kw)
    return p, opt


def steps(p, opt, n, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        p.grad = torch.randn(p.shape, generator=g) * scale
        opt.step()


def test_spam_normal_step_is_plain_adamw():
    p, opt = spam_setup()
    torch.manual_seed(0)
    q = nn.Parameter(torch.randn(10, 10))
    ref = torch.optim.AdamW([q], lr=1e-2, weight_decay=0.0)
    steps(p, opt, 30)
    steps(q, ref, 30)
    assert int(opt.spam["spikes"]) == 0
    assert torch.equal(p, q)
    assert torch.equal(opt.state[p]["exp_avg"], ref.state[q]["exp_avg"])


def test_spam_spike_soft_resets_momentum():
    p, opt = spam_setup(spike_threshold=3.0)
    steps(p, opt, 30)
    assert int(opt.spam["spikes"]) == 0
    m_before = opt.state[p]["exp_avg"].clone()
    mean_before = opt.spam["norm_mean"].clone()
    limit = mean_before + 3.0 * opt.spam["norm_var"].sqrt()
    g = torch.randn(10, 10) * 1000.0  # a 1000x gradient spike
    p.grad = g.clone()
    opt.step()
    assert int(opt.spam["spikes"]) == 1
    m_after = opt.state[p]["exp_avg"]
    assert m_after.norm() < m_before.norm(), "the spike step did not shrink exp_avg"
    # exp_avg scaled by SOFT_RESET = 0.1, the spike gradient scaled back to the threshold norm
    expected = 0.9 * (0.1 * m_before) + 0.1 * g * (limit / g.norm())
    torch.testing.assert_close(m_after, expected)
    assert opt.spam["norm_mean"] < 2 * mean_before, "the spike widened the norm statistics"
    # a normal step afterwards: exp_avg is the plain EMA, no reset
    m_before = m_after.clone()
    g = torch.randn(10, 10)
    p.grad = g.clone()
    opt.step()
    assert int(opt.spam["spikes"]) == 1
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.9 * m_before + 0.1 * g)


def test_spam_per_parameter_clip():
    theta = 50.0
    p, opt = spam_setup(spike_threshold=1e9, clip_theta=theta)
    steps(p, opt, 5)
    m, v = opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone()
    g = torch.randn(10, 10)
    g[3, 4] = 1e4
    p.grad = g.clone()
    opt.step()
    bound = (theta * v).sqrt()
    clipped = torch.maximum(torch.minimum(g, bound), -bound)
    assert clipped[3, 4] < 1e4
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.9 * m + 0.1 * clipped)


def test_spam_periodic_reset_and_lr_warmup():
    p, opt = spam_setup(weight_decay=0.0, spike_threshold=1e9, reset_interval=5, reset_warmup=3)
    assert [opt.lr_multiplier(s) for s in (4, 5, 6, 7, 10)] == pytest.approx(
        [1.0, 0.5 * (1 - math.cos(math.pi / 3)), 0.5 * (1 - math.cos(2 * math.pi / 3)), 1.0,
         0.25])
    steps(p, opt, 4)
    before = p.detach().clone()
    g = torch.randn(10, 10)
    p.grad = g.clone()
    opt.step()  # step 5: moments and step count zeroed, then this gradient goes in
    st = opt.state[p]
    assert float(st["step"]) == 1.0
    torch.testing.assert_close(st["exp_avg"], 0.1 * g)
    assert opt.param_groups[0]["lr"] == 1e-2, "the warm-up multiplier leaked into 'lr'"
    # first Adam step after a reset moves each weight by lr * multiplier * sign(g)
    torch.testing.assert_close(before - p.detach(), 1e-2 * 0.25 * g.sign(), rtol=1e-4, atol=1e-7)


def test_spam_state_round_trip_is_bit_identical():
    kw = dict(spike_threshold=2.0, clip_theta=10.0, reset_interval=7, reset_warmup=3)
    p, opt = spam_setup(**kw)
    steps(p, opt, 12, seed=3)
    buf = io.BytesIO()
    torch.save({"p": p.detach().clone(), "opt": opt.state_dict()}, buf)
    steps(p, opt, 12, seed=4, scale=3.0)

    buf.seek(0)
    ck = torch.load(buf)
    q = nn.Parameter(ck["p"])
    opt2 = optim.AdamWSPAM([q], lr=1e-2, **kw)
    opt2.load_state_dict(ck["opt"])
    assert opt2.spam["step"] == 12
    steps(q, opt2, 12, seed=4, scale=3.0)
    assert torch.equal(p, q)
    for k in ("norm_mean", "norm_var", "spikes"):
        assert torch.equal(opt.spam[k], opt2.spam[k])
    with pytest.raises(ValueError, match="adamwspam"):
        opt2.load_state_dict(torch.optim.AdamW([q]).state_dict())
