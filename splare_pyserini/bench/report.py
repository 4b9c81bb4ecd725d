"""What the bench concludes from its rows: ratios to BM25, the cost targets, a table and a plot.

Rows are ``{set name: {system name: row}}``; every row carries its ``label`` (see
:meth:`System.label_for`), so the report needs the registry only for plot markers.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..io import markdown_table, tmp_name
from .systems import MEASURES, REGISTRY
from .timing import QPS_FIELD

Results = dict[str, dict[str, dict]]

# The cost targets the bench checks last: SPLARE must cost little more than its backbone to
# encode, and stay within a small factor of BM25 in query latency and index size.
TARGET_ENCODE_RATIO = 1.05
TARGET_LATENCY_RATIO = 2.0
TARGET_INDEX_RATIO = 2.0
TARGETS = (  # (row field, limit, what it measures, what it is compared with)
    ("encode / floor", TARGET_ENCODE_RATIO, "encode cost", "the floor (backbone forward + one d_in x d_sae matmul)"),
    ("latency p50 ms / BM25", TARGET_LATENCY_RATIO, "query latency (p50, pre-encoded)", "BM25"),
    ("index MB / BM25", TARGET_INDEX_RATIO, "index size", "BM25"),
)
TARGET_SYSTEMS = ("splare", "splare-pruned")
RATIO_FIELDS = ("nDCG@10", "R@100", "MRR@10", "index MB", "latency p50 ms", "latency p95 ms",
                "on-the-fly p50 ms", "on-the-fly p95 ms", QPS_FIELD)
COLUMNS = ("nDCG@10", "R@100", "MRR@10", "doc nnz", "query nnz", "index MB", "encode docs/s", "encode / backbone",
           "encode / floor", "latency p50 ms", "latency p95 ms", "on-the-fly p50 ms", "on-the-fly p95 ms",
           QPS_FIELD)


def add_ratios(rows: dict[str, dict]) -> None:
    """Each figure's ratio to BM25's on the same set, as ``<figure> / BM25`` (nothing without a BM25 row)."""
    base = rows.get("bm25")
    if not base:
        return
    for row in rows.values():
        for name in RATIO_FIELDS:
            if name in row and base.get(name):
                row[f"{name} / BM25"] = round(row[name] / base[name], 3)


def check_targets(results: Results) -> list[dict]:
    """One record per (set, SPLARE system, target) that has the figure: the row field, its measured
    value, the limit and whether it holds (value <= limit)."""
    checks = []
    for name, rows in results.items():
        for system in TARGET_SYSTEMS:
            row = rows.get(system)
            for field, limit, what, versus in TARGETS:
                if not row or field not in row:
                    continue
                value = row[field]
                checks.append({"target": f"{name}: {row['label']} {what} <= {limit}x {versus}",
                               "holds": value <= limit, "measured": f"{value:.3f}x", "set": name,
                               "system": system, "field": field, "value": value, "limit": limit})
    return checks


def _cell(system: str, row: dict, column: str) -> str:
    if column not in row:
        return ""
    value = f"{row[column]:.4f}" if column in MEASURES else f"{row[column]:g}"
    ratio = row.get(f"{column} / BM25")
    return value if ratio is None or system == "bm25" else f"{value} ({ratio:.2f}x)"


def markdown(results: Results) -> str:
    """One table per set: each figure, then its ratio to BM25 in parentheses where it has one."""
    parts = []
    for name, rows in results.items():
        table = markdown_table(("system",) + COLUMNS, [[row["label"]] + [_cell(system, row, c) for c in COLUMNS]
                                                       for system, row in rows.items()])
        parts += [f"**{name}** (figure, then ratio to BM25 where it has one)", "", table, ""]
    return "\n".join(parts)


def plot(results: Results, path: Path) -> Path:
    """nDCG@10 against on-the-fly query latency (log scale): one colour per set, one marker per system.
    Written under a temporary name first, so a killed run leaves no half-written plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = []
    for n, (name, rows) in enumerate(results.items()):
        for i, (system, row) in enumerate(rows.items()):
            x, y = row["on-the-fly p50 ms"], row["nDCG@10"]
            xs.append(x)
            ax.scatter(x, y, marker=REGISTRY[system].marker, s=60, color=colors[n % len(colors)],
                       label=name if i == 0 else None)
            ax.annotate(row["label"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    if xs:
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.3, max(xs) * 4)  # room for the labels on the right
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("query latency p50, ms (one thread, query encoded on the fly; log scale)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("Quality against query latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="BEIR set", fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
