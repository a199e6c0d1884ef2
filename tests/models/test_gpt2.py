"""GPT-2: the nanoGPT model (124M shape, weight tying, attention through kernels/ or SDPA),
token files from the stdlib corpus (deterministic, atomic, windows), the BPE, clear errors
for a missing corpus, learning on real text, and exact resume after SIGKILL."""
import json
import os

import numpy as np
import pytest
import torch

import gpt2.model as gm
from gpt2 import prepare
from gpt2.config import Config
from gpt2.data import TokenWindows, build_datasets, example_batch, vocab_size
from lib.runconfig import ConfigError
from trainrun import assert_identical, killed_and_resumed, summary, train, train_losses

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, tokenizer="byte")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpt2data")
    prepare.prepare("stdlib", str(d), "byte", log=lambda m: None)
    return d


def test_gpt2_124m_shape_and_tied_head():
    with torch.device("meta"):
        m = gm.GPT(Config(), 50304)
    assert sum(p.numel() for p in m.parameters()) == 124_475_904
    assert m.lm_head.weight is m.transformer.wte.weight


def test_loss_in_model_is_cross_entropy_of_the_logits():
    torch.manual_seed(0)
    m = gm.GPT(Config(**TINY), 256)
    x, y = example_batch(Config(**TINY), 3)
    logits = m(x)
    assert logits.shape == (3, 16, 256)
    ce = torch.nn.functional.cross_entropy(logits.view(-1, 256), y.reshape(-1))
    torch.testing.assert_close(m(x, y), ce)


def test_attention_through_kernels_or_sdpa(monkeypatch):
    import kernels
    torch.manual_seed(0)
    m = gm.GPT(Config(**TINY), 256).eval()
    x = torch.randint(0, 256, (2, 32))
    called = []
    real = kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **k: called.append(1) or real(*a, **k))
    with_kernels = m(x)
    assert called, "kernels.attention must be used when kernels/ provides it"
    monkeypatch.setattr(gm, "kernels", None)           # `import kernels` failed
    torch.testing.assert_close(m(x), with_kernels)
    monkeypatch.setattr(gm, "kernels", object())       # kernels without attention
    torch.testing.assert_close(m(x), with_kernels)
    kernels.set_backend("cpu")                         # the blocked online-softmax path
    try:
        monkeypatch.setattr(gm, "kernels", kernels)
        torch.testing.assert_close(m(x), with_kernels, rtol=1e-4, atol=1e-5)
    finally:
        kernels.set_backend("torch")


def test_stdlib_tokens_are_deterministic_and_windowed(data_dir, tmp_path):
    meta = json.load(open(data_dir / "gpt2" / "stdlib-byte" / "meta.json"))
    assert meta["tokenizer"] == "byte" and meta["documents"] > 100
    assert meta["train_tokens"] > 1_000_000 and meta["val_tokens"] > 100_000
    again = prepare.prepare("stdlib", str(tmp_path), "byte", log=lambda m: None)
    assert again == meta
    for split in ("train.bin", "val.bin"):
        a = (data_dir / "gpt2" / "stdlib-byte" / split).read_bytes()
        assert a == (tmp_path / "gpt2" / "stdlib-byte" / split).read_bytes()
    assert not [p for p in (tmp_path / "gpt2" / "stdlib-byte").iterdir() if "tmp" in p.name]
    w = TokenWindows(str(data_dir / "gpt2" / "stdlib-byte" / "val.bin"), 16)
    tokens = np.memmap(data_dir / "gpt2" / "stdlib-byte" / "val.bin", dtype=np.uint16)
    assert len(w) == len(tokens) // 17
    x0, y0 = w[0]
    x1, _ = w[1]
    assert torch.equal(x0[1:], y0[:-1]) and x0.dtype == torch.int64
    assert torch.equal(x1, torch.from_numpy(tokens[17:33].astype(np.int64))), "no overlap"
    assert bytes(x0.tolist()) == bytes(tokens[:16].astype(np.uint8))


def test_gpt2_bpe_from_encoder_json_and_vocab_bpe(tmp_path):
    bpe_dir = tmp_path / "gpt2"
    bpe_dir.mkdir()
    symbols = [prepare.bytes_to_unicode()[b] for b in range(256)]   # GPT-2's 256 byte symbols
    merges = [("d", "e"), ("Ġ", "de"), ("f", "Ġde")]       # Ġ is the space byte
    vocab = symbols + ["de", "Ġde", "fĠde", "<|endoftext|>"]
    (bpe_dir / "encoder.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (bpe_dir / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    assert prepare.resolve_tokenizer("auto", str(tmp_path)) == "gpt2"
    assert vocab_size(Config(data_dir=str(tmp_path))) == 50304
    tok = prepare.get_tokenizer("auto", str(tmp_path))
    ids = tok.encode("def de_x = 1 dé".encode())
    assert tok.decode(ids) == "def de_x = 1 dé"
    assert vocab.index("Ġde") in ids.tolist() and vocab.index("de") in ids.tolist()
    assert tok.eot == len(vocab) - 1


def test_missing_corpus_names_dir_symbol_and_command(tmp_path):
    cfg = Config(dataset="openwebtext", data_dir=str(tmp_path), **TINY)
    with pytest.raises(ConfigError) as e:
        build_datasets(cfg)
    msg = str(e.value)
    for part in (str(tmp_path / "gpt2" / "openwebtext-byte"), "CONFIG_GPT2_DATASET",
                 "CONFIG_DATA_DIR", "python gpt2/prepare.py --dataset openwebtext"):
        assert part in msg
    with pytest.raises(ConfigError, match="CONFIG_GPT2_N_EMBD"):
        Config(n_embd=30, n_head=4).validate()


def test_stdlib_is_prepared_on_first_use(tmp_path):
    train, val = build_datasets(Config(data_dir=str(tmp_path), **TINY))
    assert (tmp_path / "gpt2" / "stdlib-byte" / "meta.json").exists()
    assert len(train) > 10 * len(val) / 2 > 0


ARGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--tokenizer", "byte", "--dropout", "0.1", "--batch-size", "8", "--max-steps", "30",
        "--warmup-steps", "3", "--lr", "3e-3", "--checkpoint-interval", "10",
        "--log-interval", "2", "--eval-interval", "10", "--eval-batches", "4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    a, b = tmp_path_factory.mktemp("gpt2a"), tmp_path_factory.mktemp("gpt2b")
    killed_and_resumed("gpt2", a, b, ARGS + ["--data-dir", str(data_dir)], first_ckpt=10)
    return a, b


def test_learns_on_stdlib_text(runs):
    losses = train_losses(runs[0])
    assert len(losses) == 15
    assert losses[0] > 5.0                      # ln 256 = 5.5 at the start
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_resume_with_dropout_is_bit_identical(runs):
    assert_identical(*runs)


SPARSE = ["--n-embd", "64", "--kernel-linear", "--kernel-backend", "cpu", "--optimizer", "adamw",
          "--pruning-method", "magnitude", "--target-sparsity", "0.75",
          "--pruning-block-size", "32", "--pruning-ramp-end", "0.25", "--pruning-frequency", "2"]


@pytest.fixture(scope="module")
def sparse_runs(tmp_path_factory, data_dir):
    a, b, ref = (tmp_path_factory.mktemp(n) for n in ("sparse_a", "sparse_b", "sparse_ref"))
    args = ARGS + ["--data-dir", str(data_dir)] + SPARSE
    killed_and_resumed("gpt2", a, b, args, first_ckpt=20)
    dense = [x for x in args if x not in ("--kernel-linear",)]
    dense[dense.index("--kernel-backend") + 1] = "torch"
    train("gpt2", ref, dense)
    return a, b, ref


def test_block_pruned_gpt2_trains_on_the_block_sparse_kernels(sparse_runs):
    """kernel_linear + 32x32 block pruning: once the masks are final (step 8 of 30) the
    blocks' layers take the block-sparse op with dW on the nonzero blocks (the partly
    pruned ones through the cpu route's per-tile products: density <= 0.6); the run ends as
    the torch reference does (dense matmuls, masked gradients), and resumes bit-identically
    after a SIGKILL past the final masks."""
    a, b, ref = sparse_runs
    s, r = summary(a), summary(ref)
    bs = s["block_sparse"]
    assert bs["from_step"] <= 10 and len(bs["layers"]) == 8, bs       # 2 blocks x 4 linears
    assert any(0 < d <= 0.6 for d in bs["layers"].values()) and bs["throughput"] > 0
    assert "block_sparse" not in r and abs(s["sparsity"] - 0.75) < 0.01
    assert abs(s["eval_loss"] - r["eval_loss"]) < 2e-3 * r["eval_loss"], (s, r)
    assert_identical(a, b)
    # each logged step has the achieved sparsity (the masks' zeros) beside the level set
    last = [json.loads(x) for x in open(a / "metrics.jsonl") if '"train"' in x][-1]
    assert last["sparsity"] == pytest.approx(s["sparsity"], abs=1e-4)
    assert last["sparsity_level"] == 0.75 and last["sparsity_target"] == 0.75


def test_block_pruned_gpt2_under_ddp_matches_one_process(tmp_path, data_dir):
    """The block-sparse layers under DDP (two gloo ranks, the same global batch): every rank
    sets the same final masks and syncs the same layouts, so the run trains as one process
    does (dropout off: a rank's dropout stream is its own). GPT-2 accumulates 4 micro-steps:
    before this test, DDP with grad_accum > 1 died re-entering DDP's no_sync() context."""
    import subprocess
    from conftest import PY, REPO
    args = [*ARGS, "--data-dir", str(data_dir), *SPARSE, "--dropout", "0.0",
            "--max-steps", "16", "--checkpoint-interval", "100", "--eval-interval", "100"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    script = os.path.join(REPO, "gpt2", "train.py")
    cmds = {"one": [PY, script], "two": [PY, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node=2", script]}
    procs = {n: subprocess.Popen([*c, "--out-dir", str(tmp_path / n), *args], env=env, cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n, c in cmds.items()}
    for p in procs.values():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    one, two = summary(tmp_path / "one"), summary(tmp_path / "two")
    assert two["block_sparse"]["layers"] == one["block_sparse"]["layers"] != {}
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(a) == len(b) == 8
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4 * max(a), (a, b)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4)
