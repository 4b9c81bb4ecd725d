"""Fusion methods side by side on one set: Pyserini's RRF (k = 60) and min-max normalized score sums
(``pyserini.fusion.normalize``, weighted by ``--alphas`` on the first run), each against BM25 and against RRF
by the paired randomization test.

    python tools/probes/fusion_methods.py <set> <split> <SPLARE run> <BM25 run> [--alphas 0.3 0.5 0.7]

A choice among these belongs to a train or dev split; a test split only reports what was chosen."""
import argparse
import tempfile
from pathlib import Path

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.lucene.evaluate import per_query_scores
from splare_pyserini.lucene.fusion import fuse_runs
from splare_pyserini.lucene.significance import compare_runs

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("dataset")
parser.add_argument("split")
parser.add_argument("splare")
parser.add_argument("bm25")
parser.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
args = parser.parse_args()

qrels = load_beir(resolve_beir_folder(args.dataset), split=args.split, need_qrels=True).qrels
tmp = Path(tempfile.mkdtemp(prefix="fusion-"))
runs = {"SPLARE": args.splare, "BM25": args.bm25,
        "RRF": fuse_runs([args.splare, args.bm25], tmp / "rrf.trec")}
for alpha in args.alphas:
    runs[f"normalize a={alpha:g}"] = fuse_runs([args.splare, args.bm25], tmp / f"norm{alpha:g}.trec",
                                               method="normalize", alpha=alpha)
print(f"| {args.dataset} {args.split} | nDCG@10 | R@100 | − BM25 (p) | − RRF (p) |")
print("|---|---|---|---|---|")
for name, run in runs.items():
    per_query = per_query_scores(qrels, run, ["nDCG@10", "R@100"])
    mean = {m: sum(v.values()) / len(v) for m, v in per_query.items()}
    cells = []
    for base in ("BM25", "RRF"):
        if name == base:
            cells.append("")
            continue
        t = compare_runs(qrels, runs[base], run)
        cells.append(f"{t.difference:+.4f} ({t.p_value:.2g}; {t.wins} / {t.losses})")
    print(f"| {name} | {mean['nDCG@10']:.4f} | {mean['R@100']:.4f} | {cells[0]} | {cells[1]} |")
