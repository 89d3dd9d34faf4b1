"""Fit + evaluate character n-gram models (Laplace) on tiny Shakespeare, side by side.

Run from the repository root::

    SPIRAL_DATA_DIR=../shared/data PYTHONPATH=src python -m benchmarks.bench_ngram [--repeats 3]

For each order 1..5 the task is: count every n-gram of the training split (90 %), then
compute the validation perplexity of the add-one (Laplace) model. Candidates:

* ``spiral``: :class:`spiral.ngram.NGramLM` — n-grams as base-|V| integers, ``np.unique``
  to count, ``np.searchsorted`` to look up;
* ``nltk.lm``: ``Laplace(n)`` fed only the order-n n-grams (its fastest use; the everygram
  pipeline is slower still), scored with ``model.perplexity``;
* ``dict``: a plain Python dict of ``Counter`` objects, written here.

Conventions are aligned (nltk's vocabulary always holds ``<UNK>``, so ours uses
``unk=True`` and the dict version adds one to |V|); the three perplexities must agree to
1e-9 relative before any timing is kept. Threads are pinned to one on every side; repeats
are interleaved. Writes ``docs/results/benchmarks/ngram/results.json``.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from typing import Any

from benchmarks.harness import compare, fmt_row, ratios, save
from spiral import data
from spiral.ngram import NGramLM


def ours(train: str, val: str, n: int) -> float:
    return NGramLM(n, smoothing="laplace", unk=True).fit(train).perplexity(val)


def with_nltk(train: str, val: str, n: int) -> float:
    from nltk.lm import Laplace
    from nltk.util import ngrams

    model = Laplace(n)
    model.fit([list(ngrams(train, n))], vocabulary_text=train)
    return float(model.perplexity(list(ngrams(val, n))))


def with_dict(train: str, val: str, n: int) -> float:
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for i in range(len(train) - n + 1):
        counts[train[i : i + n - 1]][train[i + n - 1]] += 1
    totals = {ctx: sum(c.values()) for ctx, c in counts.items()}
    vocab = set(train)
    V = len(vocab) + 1  # + <unk>, as nltk
    nll = 0.0
    for i in range(n - 1, len(val)):
        ctx, w = val[i - n + 1 : i], val[i]
        c = counts.get(ctx)
        nll -= math.log(((c[w] if c is not None else 0) + 1) / (totals.get(ctx, 0) + V))
    return math.exp(nll / (len(val) - n + 1))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--orders", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    s = data.get_splits("shakespeare")
    train, val = s.train, s.val
    rows, per_order = [], {}
    for n in args.orders:
        ppl = {"spiral": ours(train, val, n), "nltk.lm": with_nltk(train, val, n),
               "dict": with_dict(train, val, n)}
        for k, v in ppl.items():
            assert math.isclose(v, ppl["spiral"], rel_tol=1e-9), (n, k, v, ppl["spiral"])
        rec = compare(
            {"spiral": lambda n=n: ours(train, val, n),
             "nltk.lm": lambda n=n: with_nltk(train, val, n),
             "dict": lambda n=n: with_dict(train, val, n)},
            repeats=args.repeats, warmup=0, threads=1,
        )
        r = ratios(rec, "spiral")
        per_order[f"order_{n}"] = {"perplexity": ppl["spiral"], "timings": rec["timings"],
                                   "speedup_vs_nltk": r["nltk.lm"], "speedup_vs_dict": r["dict"]}
        for k in ("spiral", "nltk.lm", "dict"):
            rows.append([n] + fmt_row(k, rec["timings"][k], None if k == "spiral" else r[k]))
        print(f"order {n}: perplexity {ppl['spiral']:.4f}; spiral "
              f"{rec['timings']['spiral']['median_s']:.3f}s, nltk x{r['nltk.lm']:.1f}, "
              f"dict x{r['dict']:.1f}", flush=True)
    results = {
        "task": "fit + validation perplexity, Laplace, tiny Shakespeare (90/10), characters",
        "repeats": args.repeats,
        "threads": 1,
        "orders": per_order,
        "min_speedup_vs_nltk": min(v["speedup_vs_nltk"] for v in per_order.values()),
        "min_speedup_vs_dict": min(v["speedup_vs_dict"] for v in per_order.values()),
        "table": {"columns": ["order", "implementation", "median (ms)", "min–max (ms)",
                              "slower than spiral by"], "rows": rows},
    }
    if not args.no_save:
        print("wrote", save("ngram", results))
    return results


if __name__ == "__main__":
    main()
