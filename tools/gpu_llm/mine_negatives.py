"""BM25 hard negatives of scifact/nfcorpus train queries, as the trainer's JSONL negatives file
(the GPU machine has no Java; the trainer's --negatives bm25 would mine exactly these)."""
import csv, json, sys
from pathlib import Path
from splare_pyserini.datasets import resolve_beir_folder
from splare_pyserini.lucene.bm25_negatives import bm25_top_docs

out = Path(sys.argv[1])
with out.open("w", encoding="utf-8") as f:
    for name in ("scifact", "nfcorpus"):
        folder = resolve_beir_folder(name)
        qids = {row[0] for row in csv.reader(open(folder / "qrels/train.tsv"), delimiter="\t")}
        texts = {}
        for line in open(folder / "queries.jsonl", encoding="utf-8"):
            q = json.loads(line)
            if q["_id"] in qids:
                texts[q["_id"]] = q["text"]
        queries = sorted(set(texts.values()))
        hits = bm25_top_docs(queries, str(folder), str(out.parent / "bm25-cache"), 30)
        for q, h in zip(queries, hits):
            f.write(json.dumps({"query": q, "negatives": h}, ensure_ascii=False) + "\n")
        print(name, len(queries))
