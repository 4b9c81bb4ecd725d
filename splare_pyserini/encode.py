"""Encode a corpus and/or queries into SAE-latent impact vectors.

Corpus -> Anserini ``JsonVectorCollection`` shards ``<output>/corpus/part-SSS-CCCCC.jsonl``
(``{"id", "contents", "vector"}``), ready for ``--impact --pretokenized`` indexing.
Queries -> ``<output>/queries.jsonl`` (what Pyserini's ``--impact --encoder`` reads),
``<output>/queries.tsv`` (pretokenized: each latent repeated by its impact) and
``<output>/topics.tsv`` (``qid<TAB>text``, Pyserini's ``--topics``).

Every chunk of ``--chunk-size`` documents is written under a temporary name and
renamed when complete; rerunning a killed job skips finished chunks and produces
byte-identical output. Queries are encoded one at a time so that pre-encoded and
on-the-fly (``SaeQueryEncoder``) vectors are bit-identical.

    python -m splare_pyserini.encode --input scifact --output encode/scifact
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from . import __version__
from .atomic import atomic_write, remove_stale_temps
from .data import (Dataset, TextRecord, load_beir, load_ir_datasets, looks_like_ir_datasets_id, read_jsonl,
                   ReadReport)
from .encoder import EncoderSettings, SaeSparseEncoder
from .errors import ArtifactError, InputError, cli_main

INFO_FILE = "encode_info.json"
DEFAULT_CHUNK = 1000


@dataclass
class EncodeSummary:
    """Counters in the spirit of Anserini's indexed/empty/skipped/errors."""
    encoded: int = 0
    empty: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    reused_chunks: int = 0
    nonzeros: int = 0

    def add(self, other: dict) -> None:
        for key in ("encoded", "empty", "truncated", "nonzeros"):
            setattr(self, key, getattr(self, key) + other[key])

    def line(self, what: str) -> str:
        mean = self.nonzeros / self.encoded if self.encoded else 0.0
        skipped = sum(self.skipped.values())
        detail = f" ({', '.join(f'{n} {k}' for k, n in sorted(self.skipped.items()))})" if skipped else ""
        return (f"{what}: encoded {self.encoded:,}, empty {self.empty:,}, truncated {self.truncated:,}, "
                f"skipped {skipped:,}{detail}, mean non-zeros {mean:.1f}"
                + (f", {self.reused_chunks} finished chunk(s) reused" if self.reused_chunks else ""))


def normalize_query(text: str) -> str:
    """One line of text: what topics.tsv holds and what both search paths encode."""
    return " ".join(text.split())


def pretokenize(vector: dict[str, int]) -> str:
    """A vector as whitespace tokens, each latent repeated by its impact (Anserini's pretokenized form)."""
    return " ".join(" ".join([token] * weight) for token, weight in vector.items())


def write_info(output: Path, encoder: SaeSparseEncoder, kind: str, **details) -> None:
    """Record the settings; refuse to mix them with what an earlier run wrote to the same folder.

    Shared settings sit at the top level; ``corpus``/``queries`` hold what may differ
    between the two (top-k, max length) and where they came from.
    """
    info = encoder.info()
    section = {"topk": info.pop("topk"), "max_length": info.pop("max_length"), **details}
    path = output / INFO_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keys = set(EncoderSettings().fingerprint()) | {"d_sae"}
        diff = sorted(k for k in keys if old.get(k) != info.get(k))
        if diff:
            raise ArtifactError(f"{output} holds vectors made with other settings ({', '.join(diff)} differ: "
                                f"{ {k: old.get(k) for k in diff} }); use a new --output")
        previous = old.get(kind)
        if previous is not None and kind == "corpus" and previous != section:
            raise ArtifactError(f"{output} holds a corpus encoded from other input or with other "
                                f"options ({previous} vs {section}); use a new --output")
        info = {**old, **info}
    info[kind] = section
    with atomic_write(path) as out:
        json.dump(info, out, indent=2, sort_keys=True)
        out.write("\n")


def shard_range(n: int, shard_id: int, shard_num: int) -> tuple[int, int]:
    """Contiguous slice [start, end) of n items for one shard, as Pyserini shards."""
    if not 0 <= shard_id < shard_num:
        raise InputError(f"--shard-id {shard_id} must be in 0..{shard_num - 1}")
    per = (n + shard_num - 1) // shard_num
    return min(n, shard_id * per), min(n, (shard_id + 1) * per)


def _chunk_stats(vectors: Sequence[dict], truncated: int) -> dict:
    return {"encoded": len(vectors), "empty": sum(1 for v in vectors if not v), "truncated": truncated,
            "nonzeros": sum(len(v) for v in vectors)}


def encode_corpus(records: Sequence[TextRecord], output: str | Path, encoder: SaeSparseEncoder,
                  batch_size: int = 32, shard_id: int = 0, shard_num: int = 1,
                  chunk_size: int = DEFAULT_CHUNK, source: str = "") -> EncodeSummary:
    """Encode (one shard of) a corpus into JsonVectorCollection chunk files; resumable."""
    output = Path(output)
    corpus_dir, stats_dir = output / "corpus", output / "stats"
    for folder in (corpus_dir, stats_dir):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder)
    write_info(output, encoder, "corpus", source=source, size=len(records))
    start, end = shard_range(len(records), shard_id, shard_num)
    summary = EncodeSummary()
    chunks = [(c, min(c + chunk_size, end)) for c in range(start, end, chunk_size)]
    with tqdm(total=end - start, desc=f"encode corpus shard {shard_id}/{shard_num}", unit="doc",
              dynamic_ncols=True) as bar:
        for number, (lo, hi) in enumerate(chunks):
            name = f"part-{shard_id:03d}-{number:05d}"
            final, stats_file = corpus_dir / f"{name}.jsonl", stats_dir / f"{name}.json"
            if final.is_file() and stats_file.is_file():
                summary.add(json.loads(stats_file.read_text()))
                summary.reused_chunks += 1
                bar.update(hi - lo)
                continue
            chunk = records[lo:hi]
            vectors, truncated = encoder.encode_sorted([r.text for r in chunk], batch_size, bar.update)
            stats = _chunk_stats(vectors, truncated)
            with atomic_write(stats_file) as out:
                json.dump(stats, out)
            with atomic_write(final) as out:
                for record, vector in zip(chunk, vectors):
                    out.write(json.dumps({"id": record.id, "contents": record.text, "vector": vector},
                                         ensure_ascii=False) + "\n")
            summary.add(stats)
            bar.set_postfix(nnz=f"{summary.nonzeros / max(summary.encoded, 1):.0f}")
    return summary


def encode_queries(records: Sequence[TextRecord], output: str | Path, encoder: SaeSparseEncoder,
                   source: str = "") -> EncodeSummary:
    """Encode queries one at a time into queries.jsonl, queries.tsv and topics.tsv."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_info(output, encoder, "queries", source=source, size=len(records))
    texts = [normalize_query(r.text) for r in records]
    vectors = []
    truncated = 0
    for text in tqdm(texts, desc="encode queries", unit="query", dynamic_ncols=True):
        vecs, trunc = encoder.encode_sorted([text], batch_size=1)
        vectors.extend(vecs)
        truncated += trunc
    with atomic_write(output / "topics.tsv") as topics, atomic_write(output / "queries.tsv") as pretok, \
            atomic_write(output / "queries.jsonl") as jsonl:
        for record, text, vector in zip(records, texts, vectors):
            topics.write(f"{record.id}\t{text}\n")
            pretok.write(f"{record.id}\t{pretokenize(vector)}\n")
            jsonl.write(json.dumps({"id": record.id, "contents": text, "vector": vector}, ensure_ascii=False) + "\n")
    summary = EncodeSummary()
    summary.add(_chunk_stats(vectors, truncated))
    return summary


def load_input(spec: str, kind: str, split: str) -> tuple[list[TextRecord], list[TextRecord], list[ReadReport]]:
    """(documents, queries, read reports) from a BEIR folder/name, JSONL file or ir_datasets id."""
    path = Path(spec)
    if path.is_file():
        report = ReadReport(str(path))
        records = read_jsonl(path, report)
        return (records, [], [report]) if kind in ("corpus", "auto") else ([], records, [report])
    dataset: Dataset
    if looks_like_ir_datasets_id(spec) and not path.exists():
        try:
            dataset = load_beir(spec, split)
        except InputError:
            dataset = load_ir_datasets(spec)
    else:
        dataset = load_beir(spec, split)
    corpus = dataset.corpus if kind in ("auto", "corpus") else []
    queries = dataset.queries if kind in ("auto", "queries") else []
    return corpus, queries, dataset.reports


def build_encoder(args: argparse.Namespace) -> SaeSparseEncoder:
    """The document encoder the flags describe; ``query_view`` gives the query side."""
    settings = EncoderSettings(model=args.model, sae=args.sae, sae_id=args.sae_id, layer=args.layer,
                               pooling=args.pooling, topk=args.topk, quant_scale=args.quant_scale,
                               max_length=args.max_length, prefix=args.prefix, dtype=args.dtype,
                               sae_dtype=args.sae_dtype)
    return SaeSparseEncoder(settings, device=args.device)


def query_view(encoder: SaeSparseEncoder, args: argparse.Namespace) -> SaeSparseEncoder:
    return encoder.with_options(max_length=args.query_max_length, topk=args.query_topk)


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    """Model flags shared by encode, search and beir."""
    defaults = EncoderSettings()
    group = parser.add_argument_group("encoder")
    group.add_argument("--model", default=defaults.model, help="HF model id or local folder (default: %(default)s)")
    group.add_argument("--sae", default=None,
                       help="sae-lens folder, a sae-lens release with --sae-id, or 'vocab' for the vocabulary "
                            "twin (default: a checkpoint's own SAE, else the shipped SAE)")
    group.add_argument("--sae-id", default=None, help="SAE id within a sae-lens release")
    group.add_argument("--layer", type=int, default=None,
                       help="hidden_states index (1..num_layers); default: the layer the SAE records")
    group.add_argument("--pooling", choices=("max", "sum"), default=defaults.pooling)
    group.add_argument("--quant-scale", type=float, default=None,
                       help="impact = round(weight * scale) (default: the SAE's recorded splare_quant_scale, else 100)")
    group.add_argument("--prefix", default=defaults.prefix, help="pseudo-term prefix (default: %(default)s)")
    group.add_argument("--max-length", type=int, default=defaults.max_length,
                       help="document tokens kept (default: %(default)s, as SPLADE and MiniLM's training)")
    group.add_argument("--query-max-length", type=int, default=128)
    group.add_argument("--topk", type=int, default=None, help="keep the k largest latents per document")
    group.add_argument("--query-topk", type=int, default=None, help="keep the k largest latents per query")
    group.add_argument("--device", default="cpu")
    group.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    group.add_argument("--sae-dtype", choices=("float32", "bfloat16"), default="float32",
                       help="precision of the SAE matmul (bfloat16: faster on CPUs with AVX512-BF16; "
                            "a few impacts move by 1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m splare_pyserini.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="BEIR folder or name, JSONL file, or ir_datasets id")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--kind", choices=("auto", "corpus", "queries"), default="auto",
                        help="what to encode; a JSONL file is a corpus unless --kind queries")
    parser.add_argument("--split", default="test", help="BEIR qrels split whose queries are encoded")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-id", type=int, default=0)
    parser.add_argument("--shard-num", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="documents per output file")
    add_encoder_args(parser)
    args = parser.parse_args(argv)
    corpus, queries, reports = load_input(args.input, args.kind, args.split)
    if not corpus and not queries:
        raise InputError(f"{args.input}: nothing to encode")
    encoder = build_encoder(args)
    for report in reports:
        print(report.summary(), file=sys.stderr)
    if corpus:
        summary = encode_corpus(corpus, args.output, encoder, args.batch_size, args.shard_id, args.shard_num,
                                args.chunk_size, source=args.input)
        summary.skipped.update(sum((r.skipped for r in reports), Counter()))
        print(summary.line("corpus"), file=sys.stderr)
    if queries and args.shard_id == 0:
        print(encode_queries(queries, args.output, query_view(encoder, args), source=args.input).line("queries"), file=sys.stderr)
    print(f"wrote {args.output} (splare-pyserini {__version__})", file=sys.stderr)


if __name__ == "__main__":
    cli_main(main)()
