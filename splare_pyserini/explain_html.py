"""A self-contained HTML page of explained hits: no script, font or image from anywhere else.

For each hit: its score and the exact sum; the query and the document with the tokens that fired the
top latents highlighted (one colour per latent, the same in the query, the document and the bars; hover
a token for its latent, label and contribution); a bar per latent, scaled to the largest contribution, with its share of the score.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from .io import atomic_write

PALETTE = ("#ffd166", "#8ecae6", "#f4a261", "#b5e48c", "#cdb4db", "#ffafcc", "#90e0ef", "#e9c46a",
           "#a3c4f3", "#c7f9cc", "#ffc8dd", "#f1c0e8")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin:0 0 6px} .hit{border:1px solid #ddd;border-radius:8px;padding:14px;margin:16px 0}
.meta{color:#555;font-size:13px} .exact{color:#1a7f37;font-weight:600} .inexact{color:#b42318;font-weight:600}
.text{line-height:1.7;font-size:14px;background:#fafafa;padding:8px 10px;border-radius:6px;margin:6px 0 10px}
mark{border-radius:3px;padding:0 1px} .query{font-size:15px}
table{border-collapse:collapse;font-size:13px;width:100%} td,th{padding:3px 6px;text-align:left;vertical-align:middle}
th{border-bottom:1px solid #ccc} .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{height:12px;border-radius:3px;min-width:1px} .barcell{width:28%} .swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
.label{color:#333} .tok{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
"""


def _esc(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def highlight(text: str, marks: Sequence[tuple[tuple[int, int], str, str]]) -> str:
    """``text`` escaped, with each (span, colour, tooltip) wrapped in a ``<mark>``; the first mark given
    for a span wins its colour, every tooltip for it is kept."""
    by_span: dict[tuple[int, int], tuple[str, list[str]]] = {}
    for span, colour, tip in marks:
        if span is None or span[1] <= span[0]:
            continue
        span = (int(span[0]), int(span[1]))
        if span in by_span:
            by_span[span][1].append(tip)
        else:
            by_span[span] = (colour, [tip])
    out, cursor = [], 0
    for (start, end) in sorted(by_span):
        if start < cursor:
            continue  # overlapping spans (not produced by one tokenization) keep the first
        colour, tips = by_span[(start, end)]
        out.append(_esc(text[cursor:start]))
        out.append(f'<mark style="background:{colour}" title="{_esc(" | ".join(tips))}">{_esc(text[start:end])}</mark>')
        cursor = end
    out.append(_esc(text[cursor:]))
    return "".join(out)


def render_hit(e, top: int = 10) -> str:
    shown = e.contributions[:top]
    colour = {c.term: PALETTE[i % len(PALETTE)] for i, c in enumerate(shown)}
    total = e.total or 1

    def tip(c) -> str:
        return f"{c.term} {c.label or ''}: {c.contribution:,} ({c.query_impact}x{c.doc_impact})"

    query_html = highlight(e.query, [(c.query_span, colour[c.term], tip(c)) for c in shown])
    doc_html = (highlight(e.doc_text, [(c.doc_span, colour[c.term], tip(c)) for c in shown])
                if e.doc_text is not None else "<em>(document text not available)</em>")
    check = (f'<span class="exact">= {e.total:,}, the exact sum of {len(e.contributions)} contributions</span>'
             if e.exact else f'<span class="inexact">contributions sum to {e.total:,}</span>')
    rank = f"rank {e.rank}" if e.rank else "not in the searched hits"
    rows = []
    largest = max((c.contribution for c in shown), default=1) or 1
    for c in shown:
        width = 100.0 * c.contribution / total
        rows.append(
            "<tr>"
            f'<td><span class="swatch" style="background:{colour[c.term]}"></span><span class="tok">{_esc(c.term)}</span></td>'
            f'<td class="label">{_esc(c.label or "")}</td>'
            f'<td class="tok">{_esc(c.query_token or "")} &rarr; {_esc(c.doc_token or "")}</td>'
            f'<td class="num">{c.query_impact}&times;{c.doc_impact}</td>'
            f'<td class="num">{c.contribution:,}</td>'
            f'<td class="barcell"><div class="bar" style="width:{100.0 * c.contribution / largest:.2f}%;'
            f'background:{colour[c.term]}"></div></td>'
            f'<td class="num">{width:.1f}%</td>'
            "</tr>")
    rest = e.contributions[top:]
    if rest:
        rest_sum = sum(c.contribution for c in rest)
        rows.append(f'<tr><td colspan="4" class="meta">{len(rest)} more latents</td>'
                    f'<td class="num">{rest_sum:,}</td><td class="barcell"><div class="bar" '
                    f'style="width:{min(100.0, 100.0 * rest_sum / largest):.2f}%;background:#ccc"></div></td>'
                    f'<td class="num">{100.0 * rest_sum / total:.1f}%</td></tr>')
    kind = "term" if e.vocabulary else "latent"
    return (f'<section class="hit"><h2>{_esc(e.docid)} <span class="meta">({rank})</span></h2>'
            f'<div class="meta">Lucene score <b>{e.score:g}</b> {check}</div>'
            f'<div class="meta">query</div><div class="text query">{query_html}</div>'
            f'<div class="meta">document</div><div class="text">{doc_html}</div>'
            f'<table><tr><th>{kind}</th><th>label</th><th>query token &rarr; doc token</th>'
            f'<th class="num">q&times;d</th><th class="num">contribution</th><th>share</th><th></th></tr>'
            + "".join(rows) + "</table></section>")


def render_html(explanations: Sequence, top: int = 10, title: str = "splare_pyserini: explained hits") -> str:
    query = explanations[0].query if explanations else ""
    body = "".join(render_hit(e, top) for e in explanations) or "<p>No hits.</p>"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>Why these hits? <span class=\"meta\">query: "
            f"{_esc(query)}</span></h1><p class=\"meta\">Each score is the sum over shared latents of query impact "
            f"&times; document impact. Highlighted tokens are those whose activation set a latent's pooled weight "
            f"(hover for the latent).</p>{body}</body></html>\n")


def write_html(explanations: Sequence, path: str | Path, top: int = 10) -> Path:
    path = Path(path)
    with atomic_write(path) as out:
        out.write(render_html(explanations, top))
    return path
