"""The tour's report: a leaderboard figure, each rung's settings, time and a sample.

``write_report`` writes ``tour.json`` (the numbers), ``tour.md`` (Markdown) and ``tour.html``
(one self-contained page: styles inline and the figure embedded, so it opens from disk or
as an e-mail attachment) plus ``leaderboard.png``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

WHY_GPT = (
    "The GPT rung trains nanoGPT's baby recipe, the one chapter 8 trains on Shakespeare, on "
    "both corpora, so the tour finishes in minutes. It is not the best recipe for every "
    "corpus: on names, chapter 8 chooses the context, width, dropout and training length on "
    "validation and trains longer, and its model beats Kneser-Ney; with the baby recipe the "
    "GPT can lose to the MLP on names (see the leaderboard). The ladder compares models at one "
    "fixed, cheap recipe each, not each model at its best. The last rungs are different in "
    "kind: the book's model was pretrained once by stage 14's experiment (its record is "
    "models/spiral-book/training.json) and is only loaded here, so on Shakespeare its time "
    "is a load time and it is the one model that had far more compute than the tour spends. "
    "Its INT4 form (stage 18) is the same model with rounded weights, made in a second; on "
    "names, the tour adapts it with stage 15's LoRA for a few hundred steps, so that rung's "
    "time is fine-tuning time on top of the pretraining it inherits."
)


def _by_corpus(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["corpus"], []).append(r)
    return {c: sorted(rs, key=lambda r: r["val_nats"]) for c, rs in out.items()}


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as Markdown tables, one per corpus, best model first."""
    out = []
    for corpus, sub in _by_corpus(rows).items():
        out.append(f"\n## {corpus} (validation split, every position scored)\n")
        out.append("| model | parameters | nats/char | bits/char | train s |")
        out.append("|---|---:|---:|---:|---:|")
        for r in sub:
            params = "-" if r["parameters"] is None else f"{r['parameters']:,}"
            out.append(f"| {r['model']} | {params} | {r['val_nats']:.4f} | "
                       f"{r['val_bits']:.4f} | {r['train_s']:.2f} |")
    return "\n".join(out)


def leaderboard_figure(rows: list[dict[str, Any]]) -> Any:
    """Bits per character of every rung, one panel per corpus, best at the top."""
    from spiral.plotting import PALETTE, new_figure

    groups = _by_corpus(rows)
    height = 0.9 + 0.32 * max(len(v) for v in groups.values())
    fig, axes = new_figure(1, len(groups), width=4.2 * len(groups), height=height,
                           squeeze=False)
    stage_colour = {1: PALETTE[6], 4: PALETTE[1], 8: PALETTE[0]}
    for ax, (corpus, sub) in zip(axes[0], groups.items()):
        sub = sub[::-1]  # best at the top
        y = range(len(sub))
        bits = [r["val_bits"] for r in sub]
        ax.barh(list(y), bits, color=[stage_colour.get(r["stage"], PALETTE[3]) for r in sub],
                height=0.65)
        for i, r in zip(y, sub):
            ax.text(r["val_bits"] + 0.04, i, f"{r['val_bits']:.2f}", va="center", fontsize=7)
        ax.set_yticks(list(y), [r["model"] for r in sub], fontsize=7)
        ax.set_xlabel("validation bits per character (lower is better)")
        ax.set_title(corpus, loc="left")
        ax.set_xlim(0, max(bits) * 1.15)
    return fig


def format_markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    kind = "quick (smoke) tour: short training, not results" if report["quick"] else "full tour"
    lines = [
        "# spiral tour", "",
        f"{kind}; seed {report['seed']}; {report['wall_s'] / 60:.1f} minutes; "
        f"commit {str(report.get('git_sha') or 'unknown')[:12]}.", "",
        "Every model is trained on the corpus's training split and scored by the same "
        "evaluator on the same validation split (every character scored once).", "",
        "![leaderboard](leaderboard.png)",
        format_leaderboard(rows), "", "## The rungs", "",
    ]
    for corpus, sub in _by_corpus(rows).items():
        lines.append(f"### {corpus}\n")
        for r in sub:
            lines += [f"**{r['model']}** — {r['settings']}. Trained in {r['train_s']:.1f} s; "
                      f"{r['val_nats']:.4f} nats/char.", "", "```text",
                      r["sample"].rstrip("\n"), "```", ""]
    lines += ["## Why the GPT's recipe is not the chapter's best", "", WHY_GPT, ""]
    return "\n".join(lines)


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:.25em .7em;
border-bottom:1px solid #ddd}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;font-size:13px}img{max-width:100%}
.meta{color:#666}"""


def format_html(report: dict[str, Any], png: bytes) -> str:
    """One self-contained page: inline styles, the figure embedded as a data URI."""
    e = html.escape
    rows = report["rows"]
    kind = "quick (smoke) tour — short training, not results" if report["quick"] else "full tour"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>spiral tour</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>spiral tour</h1>",
        f"<p class='meta'>{e(kind)}; seed {report['seed']}; {report['wall_s'] / 60:.1f} "
        f"minutes; commit {e(str(report.get('git_sha') or 'unknown')[:12])}</p>",
        "<p>Every model is trained on the corpus's training split and scored by the same "
        "evaluator on the same validation split (every character scored once).</p>",
        f"<img alt='leaderboard' src='data:image/png;base64,{base64.b64encode(png).decode()}'>",
    ]
    for corpus, sub in _by_corpus(rows).items():
        parts.append(f"<h2>{e(corpus)}</h2><table><tr><th>model</th><th>parameters</th>"
                     "<th>nats/char</th><th>bits/char</th><th>train s</th></tr>")
        for r in sub:
            params = "-" if r["parameters"] is None else f"{r['parameters']:,}"
            parts.append(f"<tr><td>{e(r['model'])}</td><td class=n>{params}</td>"
                         f"<td class=n>{r['val_nats']:.4f}</td><td class=n>{r['val_bits']:.4f}"
                         f"</td><td class=n>{r['train_s']:.1f}</td></tr>")
        parts.append("</table>")
        for r in sub:
            parts.append(f"<h3>{e(r['model'])}</h3><p>{e(r['settings'])}. Trained in "
                         f"{r['train_s']:.1f} s.</p><pre>{e(r['sample'].rstrip())}</pre>")
    parts += ["<h2>Why the GPT's recipe is not the chapter's best</h2>", f"<p>{e(WHY_GPT)}</p>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write tour.json, tour.md, tour.html and leaderboard.png under ``out``."""
    import matplotlib.pyplot as plt

    from spiral.plotting import figure_png
    from spiral.records import atomic_write_bytes, atomic_write_text

    fig = leaderboard_figure(report["rows"])
    try:
        png = figure_png(fig)
    finally:
        plt.close(fig)
    paths = {"json": out / "tour.json", "md": out / "tour.md", "html": out / "tour.html",
             "png": out / "leaderboard.png"}
    atomic_write_bytes(paths["png"], png)
    atomic_write_text(paths["json"], json.dumps(report, indent=1) + "\n")
    atomic_write_text(paths["md"], format_markdown(report))
    atomic_write_text(paths["html"], format_html(report, png))
    return paths
