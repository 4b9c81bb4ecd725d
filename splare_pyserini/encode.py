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

``--ray ADDRESS`` encodes all ``--shard-num`` shards on a Ray cluster (``local``, ``auto`` or an
address), one actor per worker, each file byte-identical to what ``--shard-id i`` writes here
(see ``splare_pyserini.distributed``).

    python -m splare_pyserini.encode --input scifact --output encode/scifact
    python -m splare_pyserini.encode --input scifact --output encode/scifact --ray local --shard-num 4
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from . import __version__
from .config import check_fields, option, parse_config, require
from .distributed import RaySettings
from .datasets import (Dataset, ReadReport, TextRecord, load_beir, load_ir_datasets, looks_like_ir_datasets_id,
                       read_jsonl)
from .errors import ArtifactError, InputError, cli_main
from .io import atomic_write, remove_stale_temps
from .model.encoder import SaeSparseEncoder, normalize_query
from .model.quantize import pretokenize
from .model.settings import INFO_FILE, EncoderSettings, settings_diff

DEFAULT_CHUNK = 1000
KINDS = ("auto", "corpus", "queries")
log = logging.getLogger(__name__)


@dataclass
class EncodeSummary:
    """Counters in the spirit of Anserini's indexed/empty/skipped/errors."""
    encoded: int = 0
    empty: int = 0
    truncated: int = 0
    skipped: Counter = field(default_factory=Counter)
    reused_chunks: int = 0
    nonzeros: int = 0

    def add_counts(self, counts: dict) -> None:
        for key in ("encoded", "empty", "truncated", "nonzeros"):
            setattr(self, key, getattr(self, key) + counts[key])

    def line(self, what: str) -> str:
        mean = self.nonzeros / self.encoded if self.encoded else 0.0
        skipped = sum(self.skipped.values())
        detail = f" ({', '.join(f'{n} {k}' for k, n in sorted(self.skipped.items()))})" if skipped else ""
        return (f"{what}: encoded {self.encoded:,}, empty {self.empty:,}, truncated {self.truncated:,}, "
                f"skipped {skipped:,}{detail}, mean non-zeros {mean:.1f}"
                + (f", {self.reused_chunks} finished chunk(s) reused" if self.reused_chunks else ""))


def write_info(output: Path, encoder: SaeSparseEncoder, kind: str, **details) -> None:
    """Record the settings; refuse to mix them with what an earlier run wrote to the same folder.

    Shared settings sit at the top level; ``corpus``/``queries`` hold what may differ between the
    two sides (top-k, max length) and where they came from.
    """
    info = encoder.info()
    query = kind == "queries"
    windows = {} if query or encoder.settings.windows == 1 else {"windows": encoder.settings.windows}
    section = {"max_length": encoder.settings.side(query)[0], "topk": encoder.settings.side(query)[1], **windows,
               **details}  # windows only when used: folders written before it existed resume as before
    path = output / INFO_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = settings_diff(old, info)
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


def _counts(vectors: Sequence[dict], truncated: int) -> dict:
    return {"encoded": len(vectors), "empty": sum(1 for v in vectors if not v), "truncated": truncated,
            "nonzeros": sum(len(v) for v in vectors)}


def _vector_line(record: TextRecord, vector: dict[str, int], text: str | None = None) -> str:
    # ensure_ascii=False: documents keep their own characters (Arabic, Chinese...) in the files
    # Anserini reads; JSON escaping would only make them unreadable to people.
    return json.dumps({"id": record.id, "contents": record.text if text is None else text, "vector": vector},
                      ensure_ascii=False) + "\n"


def encode_corpus(records: Sequence[TextRecord], output: str | Path, encoder: SaeSparseEncoder,
                  batch_size: int = 32, shard_id: int = 0, shard_num: int = 1,
                  chunk_size: int = DEFAULT_CHUNK, source: str = "", *, progress: Callable[[int], None] | None = None,
                  show_progress: bool = True, clean_temps: bool = True) -> EncodeSummary:
    """Encode (one shard of) a corpus into JsonVectorCollection chunk files; resumable.

    ``progress(n)`` is called as documents are done (finished chunks included); ``clean_temps=False``
    leaves other writers' temporary files alone (shards written concurrently into one folder)."""
    output = Path(output)
    corpus_dir, stats_dir = output / "corpus", output / "stats"
    for folder in (corpus_dir, stats_dir):
        folder.mkdir(parents=True, exist_ok=True)
        if clean_temps:
            remove_stale_temps(folder)
    write_info(output, encoder, "corpus", source=source, size=len(records))
    start, end = shard_range(len(records), shard_id, shard_num)
    summary = EncodeSummary()
    chunks = [(c, min(c + chunk_size, end)) for c in range(start, end, chunk_size)]
    with tqdm(total=end - start, desc=f"encode corpus shard {shard_id}/{shard_num}", unit="doc",
              dynamic_ncols=True, disable=not show_progress) as bar:
        def advance(n: int) -> None:
            bar.update(n)
            if progress:
                progress(n)

        for number, (lo, hi) in enumerate(chunks):
            name = f"part-{shard_id:03d}-{number:05d}"
            final, stats_file = corpus_dir / f"{name}.jsonl", stats_dir / f"{name}.json"
            if final.is_file() and stats_file.is_file():
                summary.add_counts(json.loads(stats_file.read_text()))
                summary.reused_chunks += 1
                advance(hi - lo)
                continue
            chunk = records[lo:hi]
            vectors, truncated = encoder.encode_with_stats([r.text for r in chunk], False, batch_size, advance)
            counts = _counts(vectors, truncated)
            with atomic_write(stats_file) as out:
                json.dump(counts, out)
            with atomic_write(final) as out:
                out.writelines(_vector_line(record, vector) for record, vector in zip(chunk, vectors))
            summary.add_counts(counts)
            bar.set_postfix(nnz=f"{summary.nonzeros / max(summary.encoded, 1):.0f}")
    return summary


def write_topics(records: Sequence[TextRecord], path: str | Path) -> Path:
    """``qid<TAB>text`` with each text on one line, what both search paths read."""
    with atomic_write(path) as out:
        out.writelines(f"{r.id}\t{normalize_query(r.text)}\n" for r in records)
    return Path(path)


def encode_queries(records: Sequence[TextRecord], output: str | Path, encoder: SaeSparseEncoder,
                   source: str = "", *, show_progress: bool = True) -> EncodeSummary:
    """Encode queries (the query settings, one at a time) into queries.jsonl, queries.tsv and topics.tsv."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    write_info(output, encoder, "queries", source=source, size=len(records))
    with tqdm(total=len(records), desc="encode queries", unit="query", dynamic_ncols=True,
              disable=not show_progress) as bar:
        vectors, truncated = encoder.encode_with_stats([r.text for r in records], True, 1, bar.update)
    write_topics(records, output / "topics.tsv")
    with atomic_write(output / "queries.tsv") as pretok, atomic_write(output / "queries.jsonl") as jsonl:
        for record, vector in zip(records, vectors):
            pretok.write(f"{record.id}\t{pretokenize(vector)}\n")
            jsonl.write(_vector_line(record, vector, normalize_query(record.text)))
    summary = EncodeSummary()
    summary.add_counts(_counts(vectors, truncated))
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


@dataclass(frozen=True)
class EncodeConfig:
    input: str = option(help="BEIR folder or name, JSONL file, or ir_datasets id")
    output: str = option(help="output folder")
    kind: str = option("auto", "what to encode; a JSONL file is a corpus unless --kind queries", choices=KINDS)
    split: str = option("test", "BEIR qrels split whose queries are encoded")
    batch_size: int = option(32, "documents per forward pass")
    shard_id: int = option(0, "which shard of the corpus this run encodes (with --ray: all are)")
    shard_num: int = option(1, "how many shards the corpus is split into")
    chunk_size: int = option(DEFAULT_CHUNK, "documents per output file")
    device: str = option("cpu", "torch device")
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    distributed: RaySettings = field(default_factory=RaySettings)

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("batch_size", "shard_num", "chunk_size"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(0 <= self.shard_id < self.shard_num,
                f"shard_id: {self.shard_id} must be in 0..{self.shard_num - 1}")
        require(self.distributed.ray is None or self.shard_id == 0,
                "shard_id: with --ray every shard is encoded; --shard-id is for one-process runs")


def run_encode(cfg: EncodeConfig) -> None:
    corpus, queries, reports = load_input(cfg.input, cfg.kind, cfg.split)
    if not corpus and not queries:
        raise InputError(f"{cfg.input}: nothing to encode")
    for report in reports:
        log.info(report.summary())
    if cfg.distributed.ray is not None:  # the input was read (and checked) here, before Ray starts
        from .distributed import encode_on_ray

        summaries = encode_on_ray(corpus, queries, cfg.output, cfg.encoder, cfg.shard_num, cfg.distributed,
                                  batch_size=cfg.batch_size, chunk_size=cfg.chunk_size, source=cfg.input,
                                  device=cfg.device)
        if "corpus" in summaries:
            summaries["corpus"].skipped.update(sum((r.skipped for r in reports), Counter()))
            log.info(summaries["corpus"].line("corpus"))
        if "queries" in summaries:
            log.info(summaries["queries"].line("queries"))
        log.info("wrote %s (splare-pyserini %s)", cfg.output, __version__)
        return
    encoder = SaeSparseEncoder(cfg.encoder, device=cfg.device)
    if corpus:
        summary = encode_corpus(corpus, cfg.output, encoder, cfg.batch_size, cfg.shard_id, cfg.shard_num,
                                cfg.chunk_size, source=cfg.input)
        summary.skipped.update(sum((r.skipped for r in reports), Counter()))
        log.info(summary.line("corpus"))
    if queries and cfg.shard_id == 0:
        log.info(encode_queries(queries, cfg.output, encoder, source=cfg.input).line("queries"))
    log.info("wrote %s (splare-pyserini %s)", cfg.output, __version__)


def main(argv: list[str] | None = None) -> None:
    run_encode(parse_config(EncodeConfig, argv, "python -m splare_pyserini.encode", __doc__))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
