"""BPE training and encoding, side by side with the naive trainer, HF tokenizers,
sentencepiece and tiktoken (built from our own merges).

Run from the repository root::

    SPIRAL_DATA_DIR=../shared/data PYTHONPATH=src python -m benchmarks.bench_bpe

Training: vocab 4096 on all of tiny Shakespeare (1.1 MB). Every peer runs on one thread
(``RAYON_NUM_THREADS=1`` for HF, ``num_threads=1`` for sentencepiece); repeats are
interleaved by :func:`benchmarks.harness.compare`. The naive trainer runs once (it takes
minutes); ``--naive-vocab N`` trains it only to a smaller vocabulary for a smoke run
(the result is labelled so). Encoding: the whole file, MB/s of UTF-8 input; ours is timed cold
(empty chunk cache each repeat) and warm.

Writes ``docs/results/benchmarks/bpe/results.json``.
"""

from __future__ import annotations

import argparse
import io
import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.harness import compare, ratios, save  # noqa: E402
from spiral import data  # noqa: E402
from spiral.tokenizers.bpe import BPETokenizer, train_merges_fast, train_merges_naive  # noqa: E402
from spiral.tokenizers.pretokenize import GPT2_PATTERN, chunk_counts  # noqa: E402


def hf_trainer(text: str, vocab_size: int):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def train():  # type: ignore[no-untyped-def]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator([text], trainer)
        return tok

    return train


def sp_trainer(text: str, vocab_size: int):  # type: ignore[no-untyped-def]
    import sentencepiece as spm

    lines = [line for line in text.split("\n") if line]

    def train():  # type: ignore[no-untyped-def]
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
            vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True,
            num_threads=1, minloglevel=2,
        )
        return model

    return train


def tiktoken_from(tok: BPETokenizer):  # type: ignore[no-untyped-def]
    """A ``tiktoken.Encoding`` with our pattern and our ranks (first id of each byte string)."""
    import tiktoken

    ranks: dict[bytes, int] = {}
    for i, b in enumerate(tok.vocab):
        ranks.setdefault(b, i)
    enc = tiktoken.Encoding(
        name="spiral-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={}
    )
    return enc, len(tok.vocab) - len(ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--naive-vocab", type=int, default=0,
                        help="train the naive trainer only to this size (a smoke run; the "
                        "speed-up is then NOT the vocab-4096 figure and is labelled so)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    text = data.load_text("shakespeare")
    n_bytes = len(text.encode("utf-8"))
    chunks = chunk_counts(text)
    n_merges = args.vocab_size - 256
    out: dict = {"corpus_bytes": n_bytes, "vocab_size": args.vocab_size,
                 "distinct_chunks": len(chunks)}

    # --- training: ours (fast) vs HF vs sentencepiece, interleaved --------------------
    train = compare(
        {
            "spiral fast": lambda: BPETokenizer().train(text, args.vocab_size),
            "HF tokenizers": hf_trainer(text, args.vocab_size),
            "sentencepiece": sp_trainer(text, args.vocab_size),
        },
        repeats=args.repeats, warmup=1, threads=1,
    )
    out["train"] = train
    out["train_ratios"] = ratios(train, ours="spiral fast")  # peer / ours: > 1 = we are faster
    out["ours_over_hf"] = 1 / out["train_ratios"]["HF tokenizers"]  # how many times HF's time

    # --- naive trainer: once, on the same chunk counts -----------------------------------
    naive_merges = args.naive_vocab - 256 if args.naive_vocab else n_merges
    pair = compare(
        {
            "naive": lambda: train_merges_naive(chunks, naive_merges),
            "fast": lambda: train_merges_fast(chunks, naive_merges),
        },
        repeats=1, warmup=0, threads=1,
    )
    naive_s = pair["timings"]["naive"]["median_s"]
    fast_same_s = pair["timings"]["fast"]["median_s"]
    assert train_merges_naive(chunks, 50) == train_merges_fast(chunks, 50)
    out["naive"] = {
        "merges_trained": naive_merges,
        "full_vocab": not args.naive_vocab,
        "naive_s": naive_s,
        "fast_same_merges_s": fast_same_s,
        "speedup_merge_loop": naive_s / fast_same_s,
        # The whole naive train = pre-tokenization (shared) + the naive merge loop.
        "speedup_end_to_end": (
            naive_s + train["timings"]["spiral fast"]["median_s"] - fast_same_s
        ) / train["timings"]["spiral fast"]["median_s"],
    }

    # --- encoding: whole file, MB/s ----------------------------------------------------
    tok = BPETokenizer().train(text, args.vocab_size)
    hf_tok = hf_trainer(text, args.vocab_size)()
    enc, duplicates = tiktoken_from(tok)
    ours_ids = tok.encode(text)
    tik_ids = enc.encode_ordinary(text)
    hf_ids = hf_tok.encode(text).ids

    def cold() -> list[int]:
        tok._cache.clear()
        return tok.encode(text)

    encode = compare(
        {
            "spiral (cold cache)": cold,
            "spiral (warm cache)": lambda: tok.encode(text),
            "HF tokenizers": lambda: hf_tok.encode(text),
            "tiktoken (our merges)": lambda: enc.encode_ordinary(text),
        },
        repeats=args.repeats, warmup=1, threads=1,
    )
    out["encode"] = encode
    out["encode_mb_per_s"] = {
        k: n_bytes / 1e6 / v["median_s"] for k, v in encode["timings"].items()
    }
    out["encode_agreement"] = {
        "tiktoken_identical_ids": tik_ids == ours_ids,
        "duplicate_byte_strings_in_vocab": duplicates,
        "bytes_per_token": {"spiral": n_bytes / len(ours_ids), "tiktoken": n_bytes / len(tik_ids),
                            "HF tokenizers": n_bytes / len(hf_ids)},
    }

    t = train["timings"]
    ours_s = t["spiral fast"]["median_s"]
    rows = [[k, f"{v['median_s']:.3f}", f"{v['min_s']:.3f}–{v['max_s']:.3f}",
             "1 (ours)" if k == "spiral fast" else f"{v['median_s'] / ours_s:.2f}×"]
            for k, v in t.items()]
    naive_label = "naive (one run)" if not args.naive_vocab else (
        f"naive (one run, only {naive_merges} merges)")
    rows.append([naive_label, f"{naive_s:.1f}", "—",
                 f"{out['naive']['speedup_end_to_end']:.0f}×"])
    out["train_table"] = {"columns": ["trainer (vocab 4096)", "median s", "min–max s",
                                      "time / ours"], "rows": rows}
    out["encode_table"] = {
        "columns": ["encoder (whole file)", "MB/s", "bytes/token"],
        "rows": [[k, f"{mbps:.2f}",
                  f"{out['encode_agreement']['bytes_per_token']['HF tokenizers']:.3f}"
                  if k.startswith("HF") else f"{n_bytes / len(ours_ids):.3f}"]
                 for k, mbps in out["encode_mb_per_s"].items()],
    }
    out["targets"] = {
        "faster_than_naive_50x": out["naive"]["speedup_end_to_end"] >= 50,
        "within_20x_of_hf": out["train_ratios"]["HF tokenizers"] >= 1 / 20,
    }
    path = save("bpe", out)
    print(f"wrote {path}")
    for row in out["train_table"]["rows"]:
        print("  train ", *row)
    for row in out["encode_table"]["rows"]:
        print("  encode", *row)
    print("  targets", out["targets"], "tiktoken identical:", tik_ids == ours_ids)


if __name__ == "__main__":
    main()
