"""lib/pruning.py and its schedule and scores: exact sparsity after real training, scores
against their formulas, the schedule, checkpoint round trips, memory, errors."""
import io

import pytest
import torch
from torch import nn

from lib import optim, pruning, pruning_scores
from lib.runconfig import RunConfig

STEPS = 40  # t0 = 4, t1 = 28 with the default warm-up 0.1 and ramp end 0.7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)


def mlp():
    return nn.Sequential(nn.Linear(64, 33), nn.ReLU(), nn.Linear(33, 17), nn.ReLU(),
                         nn.Linear(17, 10))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 10, 3)
        self.fc, self.head = nn.Linear(360, 20), nn.Linear(20, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x.view(-1, 1, 8, 8)))))
        return self.head(torch.relu(self.fc(x.flatten(1))))


def config(**kw):
    base = dict(optimizer="adamw", pruning_method="magnitude", target_sparsity=0.7,
                weight_decay=0.1, lr=3e-3, pruning_frequency=3)
    return RunConfig(**{**base, **kw})


def build(cfg, make=mlp, seed=0, total=STEPS):
    torch.manual_seed(seed)
    model = make()
    opt = optim.build_optimizer(model, cfg)
    return model, opt, pruning.build_pruner(model, opt, cfg, total)


def train(model, opt, pruner, cfg, data, first, last):
    """The trainer's order: forward, backward, before_step, clip, step, after_step."""
    X, Y = data
    clip = optim.effective_grad_clip(cfg)
    for step in range(first, last + 1):
        idx = torch.randint(0, len(X), (32,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pruner.before_step(step)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        pruner.after_step(step)


def check_exact(model, cfg, target):
    sp = pruning.measure_sparsity(model, cfg)
    params = dict(pruning.prunable_parameters(model, cfg))
    if cfg.pruning_scope == "global":
        assert sp["zeros"] == round(target * sp["total"]), sp
        assert abs(sp["sparsity"] - target) <= 1e-3
    else:
        for name, p in params.items():
            assert abs(sp["layers"][name] * p.numel() - target * p.numel()) <= 1.0, (name, sp)
    return sp


METHODS = [  # (optimizer, method, extra settings)
    ("adamw", "magnitude", {}),
    ("sgd", "magnitude", {"pruning_ramp": "linear"}),
    ("adamw", "movement", {}),
    ("adam", "movement", {"movement_variant": "delta"}),
    ("adamwprune", "state", {}),
    ("adamwprune", "state", {"state_score": "movement_to_zero", "adamwprune_base": "adamwspam"}),
    ("adamwprune", "state", {"state_score": "bias_corrected", "adamwprune_base": "adamwadv"}),
]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("opt_name,method,extra", METHODS)
def test_training_hits_target_and_pruned_weights_stay_zero(digits, scope, opt_name, method,
                                                           extra):
    cfg = config(optimizer=opt_name, pruning_method=method, pruning_scope=scope, **extra)
    model, opt, pruner = build(cfg)
    train(model, opt, pruner, cfg, digits, 1, STEPS)
    check_exact(model, cfg, 0.7)
    pruned = {n: p.detach() == 0 for n, p in pruning.prunable_parameters(model, cfg)}
    X, Y = digits
    nn.functional.cross_entropy(model(X[:64]), Y[:64]).backward()
    pruner.before_step(STEPS + 1)
    for n, p in pruning.prunable_parameters(model, cfg):
        assert torch.all(p.grad[pruned[n]] == 0), f"{n}: before_step left a pruned gradient"
    train(model, opt, pruner, cfg, digits, STEPS + 1, STEPS + 10)  # weight decay, momentum
    for n, p in pruning.prunable_parameters(model, cfg):
        assert torch.all(p[pruned[n]] == 0), f"{n}: a pruned weight came back"
        assert torch.equal(pruned[n], ~pruner.masks[n])
    check_exact(model, cfg, 0.7)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("method,opt_name", [("magnitude", "sgd"), ("state", "adamwprune")])
def test_block_pruning_on_a_cnn(digits, scope, method, opt_name):
    b = 4  # conv1 is [6, 9], conv2 [10, 54], fc [20, 360]: partial edge blocks everywhere
    cfg = config(optimizer=opt_name, pruning_method=method, pruning_scope=scope,
                 pruning_block_size=b)
    model, opt, pruner = build(cfg, make=CNN)
    train(model, opt, pruner, cfg, digits, 1, STEPS)
    names = [n for n, _ in pruning.prunable_parameters(model, cfg)]
    assert names == ["c1.weight", "c2.weight", "fc.weight"]
    sp = pruning.measure_sparsity(model, cfg)
    for n, p in pruning.prunable_parameters(model, cfg):
        mask = pruner.masks[n].view(p.shape[0], -1)
        blocks, _ = pruning.block_scores(mask.float(), b)
        # every block is all kept or all pruned: its mean is exactly 0 or 1
        assert torch.all((blocks == 0) | (blocks == 1)), n
        if scope == "layer":
            assert abs(sp["layers"][n] - 0.7) * p.numel() <= b * b, n
    assert abs(sp["zeros"] - 0.7 * sp["total"]) <= b * b
    # the pruner's achieved sparsity (logged per step) is the masks' measured one; with
    # partial edge blocks it is near the level it was set to, not at it
    assert pruner.achieved == pytest.approx(sp["zeros"] / sp["total"], abs=1e-12)
    assert pruner.sparsity == 0.7 and pruner.achieved != 0.7


# -----------------------------------------------------------------------------
# the schedule

@pytest.mark.parametrize("ramp,mid", [("cubic", 0.8 * (1 - 0.5 ** 3)), ("linear", 0.4),
                                      ("cubic-in", 0.8 * 0.5 ** 3)])
def test_schedule_exact_at_warmup_mid_and_end(ramp, mid):
    cfg = config(pruning_ramp=ramp, target_sparsity=0.8, pruning_frequency=10,
                 pruning_warmup=0.1, pruning_ramp_end=0.7)
    model, opt, pruner = build(cfg, total=100)  # t0 = 10, t1 = 70, mid = 40
    assert (pruner.t0, pruner.t1) == (10, 70)
    assert [pruner.target_at(s) for s in (0, 10, 40, 70, 100)] == pytest.approx(
        [0.0, 0.0, mid, 0.8, 0.8])
    n = sum(p.numel() for _, p in pruning.prunable_parameters(model, cfg))
    seen = {}
    for step in range(1, 101):  # masks change only at update steps: 20, 30, ..., 70
        pruner.after_step(step)
        seen[step] = pruning.measure_sparsity(model, cfg)["zeros"]
    assert seen[10] == seen[19] == 0
    assert seen[40] == seen[49] == round(mid * n)
    assert seen[70] == seen[100] == round(0.8 * n)
    changes = [s for s in range(2, 101) if seen[s] != seen[s - 1]]
    assert changes == [20, 30, 40, 50, 60, 70]


def test_updates_every_frequency_and_exactly_at_ramp_end():
    cfg = config(pruning_frequency=7)  # t0 = 4, t1 = 28: updates at 11, 18, 25 and 28
    model, opt, pruner = build(cfg)
    sparsity = []
    for step in range(1, STEPS + 1):
        pruner.after_step(step)
        sparsity.append(pruner.sparsity)
    changes = [s + 1 for s in range(1, STEPS) if sparsity[s] != sparsity[s - 1]]
    assert changes == [11, 18, 25, 28]


def test_a_time_budget_moves_the_schedule_ahead_of_the_steps():
    """Under a TIME budget the position is max(step, budget_used * total): a run whose budget
    ends at step 50 of 1000 ramps over its budget (t0, t1 at 10 and 70 percent of it) with
    the same cadence, and reaches the target at step 35, not at 700 or in finalize()."""
    cfg = config(target_sparsity=0.8, pruning_frequency=5, pruning_warmup=0.1,
                 pruning_ramp_end=0.7)
    model, opt, pruner = build(cfg, total=1000)       # t0 = 100, t1 = 700
    levels = {}
    for step in range(1, 51):
        pruner.after_step(step, budget_used=step / 50)
        levels[step] = pruner.sparsity
    changes = [s for s in range(2, 51) if levels[s] != levels[s - 1]]
    assert changes == [10, 15, 20, 25, 30, 35]  # past t0 on the cadence; at t1 (step 35)
    assert levels[35] == levels[50] == 0.8
    assert pruner.target_at(20, budget_used=20 / 50) == pytest.approx(
        0.8 * (1 - (1 - (400 - 100) / 600) ** 3))
    # a budget that never binds leaves the step schedule as it was
    model2, opt2, unbudgeted = build(cfg, total=1000)
    _, _, budgeted = build(cfg, total=1000)
    for step in range(1, 1001):
        unbudgeted.after_step(step)
        budgeted.after_step(step, budget_used=step / 2000)
        assert budgeted.sparsity == unbudgeted.sparsity, step


def test_finalize_forces_target_and_is_idempotent(digits):
    cfg = config(pruning_method="movement")
    model, opt, pruner = build(cfg, total=100)  # t0 = 10, t1 = 70; a time budget stops at 30
    train(model, opt, pruner, cfg, digits, 1, 30)
    sp = pruning.measure_sparsity(model, cfg)
    assert 0 < sp["zeros"] < 0.5 * sp["total"]
    pruner.finalize()
    masks = {n: m.clone() for n, m in pruner.masks.items()}
    check_exact(model, cfg, 0.7)
    pruner.finalize()
    assert all(torch.equal(masks[n], m) for n, m in pruner.masks.items())
    train(model, opt, pruner, cfg, digits, 31, 40)  # mask updates inside the ramp: no regrowth
    assert all(torch.equal(masks[n], m) for n, m in pruner.masks.items())


# -----------------------------------------------------------------------------
# scores against their formulas

EPS = 1e-8
FORMULAS = {
    "default": lambda w, m, v, t: (w * m).abs() * w.abs() / (v.sqrt() + EPS),
    "magnitude": lambda w, m, v, t: w.abs(),
    "sqrt_momentum": lambda w, m, v, t: w.abs() * m.abs().sqrt(),
    "movement_to_zero": lambda w, m, v, t: -(torch.sign(w) * m) / (v.sqrt() + EPS),
    "second_moment": lambda w, m, v, t: w.abs() / (v.sqrt() + EPS),
    "bias_corrected": lambda w, m, v, t: ((w * m / (1 - 0.9 ** t)).abs() * w.abs()
                                          / ((v / (1 - 0.999 ** t)).sqrt() + EPS)),
}


@pytest.mark.parametrize("kind", FORMULAS)
def test_state_scores_match_formulas(kind):
    cfg = config(optimizer="adamwprune", pruning_method="state", state_score=kind,
                 prune_head=True, pruning_scope="layer", target_sparsity=0.5)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5))
    opt = optim.build_optimizer(model, cfg)
    pruner = pruning.build_pruner(model, opt, cfg, 10)
    w = model[0].weight
    m, v = torch.randn(5, 4) * 0.1, torch.rand(5, 4) * 0.01
    opt.state[w] = {"step": torch.tensor(3.0), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    expected = FORMULAS[kind](w.detach(), m, v, 3.0)
    got = pruning_scores.state(w.detach(), m, v, kind, step=3.0, beta1=0.9, beta2=0.999, eps=EPS)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    # through the pruner: the 10 lowest by the formula are the ones pruned
    pruner.finalize()
    lowest = torch.zeros(20, dtype=torch.bool)
    lowest[expected.flatten().argsort()[:10]] = True
    assert torch.equal(~pruner.masks["0.weight"].flatten(), lowest)


def test_movement_scores_match_formulas():
    cfg = config(pruning_method="movement", prune_head=True)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4))
    w = model[0].weight
    pruner = pruning.build_pruner(model, optim.build_optimizer(model, cfg), cfg, 10)
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    w1 = w.detach().clone()
    w.grad = g1.clone()
    pruner.before_step(1)
    with torch.no_grad():
        w.add_(torch.randn(4, 3))
    w2 = w.detach().clone()
    w.grad = g2.clone()
    pruner.before_step(2)
    torch.testing.assert_close(pruner.scores["0.weight"], -(g1 * w1 + g2 * w2))

    cfg = config(pruning_method="movement", movement_variant="delta", prune_head=True,
                 target_sparsity=0.5)
    pruner = pruning.build_pruner(model, optim.build_optimizer(model, cfg), cfg, 10)
    w0 = w.detach().clone()
    with torch.no_grad():
        w.add_(torch.randn(4, 3))
    expected = w.detach() * (w.detach() - w0)
    pruner.finalize()
    lowest = torch.zeros(12, dtype=torch.bool)
    lowest[expected.flatten().argsort()[:6]] = True
    assert torch.equal(~pruner.masks["0.weight"].flatten(), lowest)
    assert not pruner.scores and set(pruner.w0) == {"0.weight"}


def test_magnitude_ties_prune_exactly_k_by_index():
    cfg = config(prune_head=True, target_sparsity=0.3)
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 7))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # every score equal
    opt = optim.build_optimizer(model, cfg)
    pruner = pruning.build_pruner(model, opt, cfg, 10)
    pruner.finalize()
    assert pruning.measure_sparsity(model, cfg)["zeros"] == round(0.3 * 170) == 51
    assert torch.all(~pruner.masks["0.weight"].flatten()[:51])  # lowest index first


@pytest.mark.parametrize("margin_sd", [8, 0])
def test_sampled_kth_value_is_kthvalue(monkeypatch, margin_sd):
    """The CPU's k-th score for large tensors comes from a sampled bracket: exactly
    kthvalue's value, with ties, -inf (pruned weights) and the extreme k; with no margin the
    bracket mostly misses and the full kthvalue answers (still exact)."""
    monkeypatch.setattr(pruning, "_SAMPLE", 256)
    monkeypatch.setattr(pruning, "_MARGIN_SD", margin_sd)
    g = torch.Generator().manual_seed(3)
    n = 5000
    for s in (torch.randn(n, generator=g), torch.randint(0, 7, (n,), generator=g).float(),
              torch.where(torch.rand(n, generator=g) < 0.3, float("-inf"),
                          torch.rand(n, generator=g))):
        for k in (1, 2, 1499, 2500, 4999, 5000):
            assert pruning._kth_smallest_cpu(s, k) == torch.kthvalue(s, k).values
            assert int(pruning._lowest(s, k).sum()) == k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_cut_matches_cpu():
    """GPUs take the k-th score from topk, the CPU from kthvalue: same masks, ties included."""
    torch.manual_seed(0)
    for s in (torch.randn(1001), torch.randint(0, 5, (1001,)).float(),
              torch.where(torch.rand(1001) < 0.3, float("-inf"), torch.randn(1001))):
        for k in (0, 1, 333, 500, 501, 1000, 1001):
            assert torch.equal(pruning._lowest(s, k), pruning._lowest(s.cuda(), k).cpu())
            assert int(pruning._lowest(s, k).sum()) == k


def test_block_scores_average_partial_blocks():
    s = torch.arange(15.0).view(3, 5)
    means, sizes = pruning.block_scores(s, 2)
    assert sizes.tolist() == [[4, 4, 2], [2, 2, 1]]
    torch.testing.assert_close(means, torch.tensor([[3.0, 5.0, 6.5], [10.5, 12.5, 14.0]]))
    keep = torch.tensor([[True, False, True], [False, True, False]])
    full = pruning.expand_blocks(keep, torch.Size([3, 5]), 2)
    assert full.tolist() == [[True, True, False, False, True]] * 2 + [
        [False, False, True, True, False]]


# -----------------------------------------------------------------------------
# checkpoints: resumed training is bit-identical

RESUME = [  # (optimizer, method, extra settings)
    ("sgd", "magnitude", {"pruning_scope": "layer"}),
    ("adamw", "movement", {}),
    ("adamwadv", "movement", {"movement_variant": "delta"}),
    ("adamwprune", "state", {"adamwprune_base": "adamwspam", "state_score": "bias_corrected",
                             "spam_clip_theta": 10.0, "spam_reset_interval": 9,
                             "spam_reset_warmup": 3, "spam_spike_threshold": 1.5}),
    ("adamwprune", "state", {"pruning_block_size": 3}),
]


@pytest.mark.parametrize("opt_name,method,extra", RESUME)
def test_resume_mid_ramp_is_bit_identical(digits, opt_name, method, extra):
    cfg = config(optimizer=opt_name, pruning_method=method, **extra)
    model, opt, pruner = build(cfg)
    train(model, opt, pruner, cfg, digits, 1, STEPS)

    model2, opt2, pruner2 = build(cfg)
    train(model2, opt2, pruner2, cfg, digits, 1, 15)  # mid-ramp: t0 = 4, t1 = 28
    assert 0 < pruner2.sparsity < 0.7
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "optimizer": opt2.state_dict(),
                "pruner": pruner2.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf)
    model3, opt3, pruner3 = build(cfg, seed=123)  # different init: the checkpoint must win
    model3.load_state_dict(ck["model"])
    opt3.load_state_dict(ck["optimizer"])
    pruner3.load_state_dict(ck["pruner"])
    train(model3, opt3, pruner3, cfg, digits, 16, STEPS)

    for (n, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), f"{n} differs after resume"
    for key in ("masks", "scores", "w0"):
        for n, t in getattr(pruner, key).items():
            assert torch.equal(t, getattr(pruner3, key)[n]), f"pruner {key}[{n}] differs"


@pytest.mark.parametrize("opt_name,method,extra", METHODS[:5])
def test_final_masks_stop_weight_masking_with_identical_results(digits, opt_name, method,
                                                                extra, monkeypatch):
    """Once final, the optimizer state at pruned weights is zeroed and the per-step weight
    masking stops: the trajectory is bit-identical to masking every step, and on_final
    runs once (again after loading a final checkpoint)."""
    cfg = config(optimizer=opt_name, pruning_method=method, **extra)
    model, opt, pruner = build(cfg)
    calls = []
    pruner.on_final.append(lambda: calls.append(pruner.sparsity))
    train(model, opt, pruner, cfg, digits, 1, STEPS + 10)
    assert calls == [0.7] and pruner.weights_stay_zero
    monkeypatch.setattr(pruning, "KEEPS_ZEROS", ())
    model2, opt2, pruner2 = build(cfg)
    train(model2, opt2, pruner2, cfg, digits, 1, STEPS + 10)
    assert not pruner2.weights_stay_zero
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), f"{n}: skipping the final masking changed the weights"
    monkeypatch.undo()
    model3, opt3, pruner3 = build(cfg)
    pruner3.on_final.append(lambda: calls.append("resumed"))
    opt3.load_state_dict(opt.state_dict())
    pruner3.load_state_dict(pruner.state_dict())
    assert calls[-1] == "resumed" and pruner3.weights_stay_zero


# -----------------------------------------------------------------------------
# layers, memory, errors

class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(11, 6)
        self.conv = nn.Conv2d(1, 2, 3)
        self.mlp = nn.Linear(6, 6)
        self.ln = nn.LayerNorm(6)
        self.lm_head = nn.Linear(6, 11, bias=False)
        self.lm_head.weight = self.wte.weight  # tied


def names(model, **kw):
    return [n for n, _ in pruning.prunable_parameters(model, config(**kw))]


def test_prunable_parameters_exclusions_and_tied_weights():
    m = TiedLM()
    assert names(m) == ["conv.weight", "mlp.weight"]
    assert names(m, prune_embeddings=True) == ["conv.weight", "mlp.weight"]  # tied to the head
    assert names(m, prune_head=True) == ["conv.weight", "mlp.weight"]  # tied to an embedding
    assert names(m, prune_embeddings=True, prune_head=True) == [
        "wte.weight", "conv.weight", "mlp.weight"]
    m.prune_exclude = ["mlp.weight"]  # the model names its head: lm_head is no longer it
    m.lm_head = nn.Linear(6, 11)
    assert names(m) == ["conv.weight", "lm_head.weight"]
    assert names(m, prune_head=True) == ["conv.weight", "mlp.weight", "lm_head.weight"]
    m.prune_exclude = ["mlp.wieght"]
    with pytest.raises(ValueError, match="mlp.wieght"):
        names(m)


def test_state_pruner_keeps_only_a_bool_mask():
    cfg = config(optimizer="adamwprune", pruning_method="state")
    model, opt, pruner = build(cfg, make=CNN)
    n = sum(p.numel() for _, p in pruning.prunable_parameters(model, cfg))
    tensors = [t for key in ("masks", "scores", "w0") for t in pruner.state_dict()[key].values()]
    assert all(t.dtype == torch.bool for t in tensors)
    assert sum(t.numel() * t.element_size() for t in tensors) == n
    movement = build(config(pruning_method="movement"), make=CNN)[2]
    assert sum(t.nbytes for t in movement.state_dict()["scores"].values()) == 4 * n


def test_state_pruning_with_sgd_names_the_fix():
    cfg = config(optimizer="sgd", pruning_method="state")
    model = mlp()
    with pytest.raises(ValueError, match="--optimizer adamwprune"):
        pruning.build_pruner(model, optim.build_optimizer(model, cfg), cfg, STEPS)


def test_bad_settings_name_the_flag():
    model = mlp()
    opt = optim.build_optimizer(model, config())
    for kw, flag in ((dict(pruning_scope="net"), "--pruning-scope"),
                     (dict(state_score="x", pruning_method="state", optimizer="adamwprune"),
                      "--state-score"),
                     (dict(target_sparsity=0.0), "--target-sparsity")):
        with pytest.raises(ValueError, match=flag):
            pruning.build_pruner(model, opt, config(**kw), STEPS)
    pruner = pruning.build_pruner(model, opt, config(), STEPS)
    other = pruning.build_pruner(model, opt, config(pruning_method="movement"), STEPS)
    with pytest.raises(ValueError, match="--pruning-method"):
        pruner.load_state_dict(other.state_dict())


def test_none_is_a_no_op(digits):
    cfg = config(pruning_method="none", target_sparsity=0.0)
    model, opt, pruner = build(cfg)
    train(model, opt, pruner, cfg, digits, 1, 5)
    pruner.finalize()
    assert pruner.target_at(STEPS) == 0.0 and not pruner.masks
    assert pruning.measure_sparsity(model, cfg)["zeros"] == 0
    pruner.load_state_dict(pruner.state_dict())
