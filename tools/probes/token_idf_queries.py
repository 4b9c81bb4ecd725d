"""Query latents weighted by their token's rarity: does it recover what exact terms give BM25?

Each query token's SAE activations are multiplied by (idf_t / median idf)^beta before max pooling, idf_t
from the word pieces' document frequencies in the four shipped corpora (a fixed table: a set scored here
need not be among them; a piece none of them holds gets the largest idf). Documents are unchanged: the
queries are re-encoded and searched against a ``beir`` output's SPLARE index, and scored against its
SPLARE and BM25 runs by the paired randomization test.

    python tools/probes/token_idf_queries.py <set> <split> <beir output> [--betas 0 0.5 1 2]

beta 0 must reproduce the output's SPLARE run (checked)."""
import argparse
import math
from pathlib import Path

import torch

from splare_pyserini.datasets import load_beir, resolve_beir_folder
from splare_pyserini.encode import encode_queries
from splare_pyserini.lucene.evaluate import per_query_scores
from splare_pyserini.lucene.search import open_searcher, search_topics
from splare_pyserini.lucene.significance import compare_runs
from splare_pyserini.model.encoder import SaeSparseEncoder

SHIPPED = ("scifact", "nfcorpus", "cranfield", "cacm")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("dataset")
parser.add_argument("split")
parser.add_argument("beir_output")
parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
parser.add_argument("--work", default="runs/token-idf", help="where the idf table, queries and runs go")
args = parser.parse_args()

encoder = SaeSparseEncoder()
work = Path(args.work)
table_path = work / "idf.pt"
if table_path.is_file():
    idf = torch.load(table_path)
else:
    df = torch.zeros(len(encoder.tokenizer), dtype=torch.float64)
    n = 0
    for name in SHIPPED:
        docs = load_beir(resolve_beir_folder(name), "test", need_qrels=False).corpus
        for start in range(0, len(docs), 256):
            texts = [d.text for d in docs[start:start + 256]]
            for ids in encoder.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=512)["input_ids"]:
                df[list(set(ids))] += 1
            n += len(texts)
    idf = torch.log(torch.tensor(float(n)) / (df + 1)).clamp_min(0.0).float()
    work.mkdir(parents=True, exist_ok=True)
    torch.save(idf, table_path)
median = float(idf[idf < idf.max()].median())
model = encoder.model
state = {"beta": 0.0}


def forward(input_ids, attention_mask, token_mask):
    """SparseLatentModel.forward with each real token's latents scaled by its rarity before max pooling."""
    hidden = model.backbone(input_ids, attention_mask)
    mask = token_mask.bool()
    states, ids = hidden[mask], input_ids[mask]
    weight = (idf[ids] / median).clamp_min(1e-3) ** state["beta"]
    latents = torch.relu(model.token_latents(states)) * weight[:, None]
    pooled = [segment.amax(dim=0) if segment.shape[0] else latents.new_zeros(model.dim)
              for segment in latents.split(mask.sum(dim=1).tolist())]
    return model.saturate(torch.stack(pooled))


model.forward = forward
data = load_beir(resolve_beir_folder(args.dataset), args.split, need_qrels=True)
out = Path(args.beir_output)
stock, bm25 = out / "splare" / "run.trec", out / "bm25" / "run.trec"
index = out / "splare" / "index"
print(f"| {args.dataset} {args.split}: beta | nDCG@10 | R@100 | − SPLARE (p; won / lost) | − BM25 (p; won / lost) |")
print("|---|---|---|---|---|")
for beta in args.betas:
    state["beta"] = beta
    folder = work / f"{args.dataset}.{args.split}" / f"beta{beta:g}"
    encode_queries(data.queries, folder, encoder, source=args.dataset, show_progress=False)
    run = search_topics(open_searcher(index, str(folder / "queries.jsonl")), folder / "topics.tsv",
                        folder / "run.trec")
    scores = {m: sum(v.values()) / len(v) for m, v in per_query_scores(data.qrels, run, ["nDCG@10", "R@100"]).items()}
    cells = []
    for base in (stock, bm25):
        t = compare_runs(data.qrels, base, run)
        cells.append(f"{t.difference:+.4f} ({t.p_value:.2g}; {t.wins} / {t.losses})")
    if beta == 0:
        same = run.read_text().split() == stock.read_text().split()
        print(f"(beta 0 reproduces the stock run: {same})")
    print(f"| {beta:g} | {scores['nDCG@10']:.4f} | {scores['R@100']:.4f} | {cells[0]} | {cells[1]} |")
