"""Read corpora, queries, qrels and topics: BEIR folders, JSONL files, TSV topics, ir_datasets ids.

Errors name the file and line; skipped records (duplicate ids) are counted so the
encoder can report them, like Anserini's indexed/empty/skipped counters.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .io import atomic_write

ID_FIELDS = ("_id", "id", "docid", "doc_id", "qid", "query_id")
TEXT_FIELDS = ("text", "contents", "body", "query")
PACKAGED_BEIR = Path(__file__).resolve().parent / "resources" / "beir"
PACKAGED_CORPORA = Path(__file__).resolve().parent / "resources" / "corpora"  # text-only corpora (no queries)


def join_text(*parts: str | None) -> str:
    """A document's fields (title, text...) as one text, the same in every reader, the BM25 index and
    training: each stripped, empty ones dropped, one space between."""
    return " ".join(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class TextRecord:
    """One document or query: an id and the text the encoder sees."""
    id: str
    text: str


@dataclass
class ReadReport:
    """What reading a source did besides returning records."""
    source: str
    read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        extra = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"{self.source}: {self.read} records" + (f" (skipped: {extra})" if extra else "")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte {err.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _record_from_json(obj: dict, where: str) -> TextRecord:
    ident = next((obj[k] for k in ID_FIELDS if k in obj), None)
    if ident is None or (isinstance(ident, str) and not ident.strip()):
        raise InputError(f"{where}: record has no id (expected one of the fields {', '.join(ID_FIELDS)})")
    if not isinstance(ident, (str, int)):
        raise InputError(f"{where}: id must be a string or an integer, got {type(ident).__name__}")
    parts = [obj.get("title")] + [obj.get(k) for k in TEXT_FIELDS]
    if all(p is None for p in parts):
        raise InputError(f"{where}: record {ident!r} has no text field (expected title and/or one of "
                         f"{', '.join(TEXT_FIELDS)})")
    for name in ("title",) + TEXT_FIELDS:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise InputError(f"{where}: field {name!r} of record {ident!r} must be a string")
    return TextRecord(id=str(ident), text=join_text(*parts))


def _dedup(records: Iterator[tuple[str, TextRecord]], report: ReadReport) -> list[TextRecord]:
    seen: set[str] = set()
    out = []
    for _where, record in records:
        if record.id in seen:
            report.skipped["duplicate ids"] += 1
            continue
        seen.add(record.id)
        out.append(record)
    report.read = len(out)
    return out


def read_jsonl(path: str | Path, report: ReadReport | None = None) -> list[TextRecord]:
    """Records of a BEIR or Pyserini-style JSONL file, in file order, duplicates skipped."""
    report = report if report is not None else ReadReport(str(path))
    pairs = ((f"{path}:{n}", _record_from_json(obj, f"{path}:{n}")) for n, obj in iter_json_lines(path))
    return _dedup(pairs, report)


def read_tsv_topics(path: str | Path) -> list[TextRecord]:
    """``qid<TAB>text`` topics, the format Pyserini's search CLI reads (read here, never through
    Pyserini's ``get_query_iterator``, which picks a reader by substrings of the path)."""
    if not Path(path).is_file():
        raise InputError(f"--topics {path}: no such file")
    records = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            qid, sep, text = line.rstrip("\n").partition("\t")
            if not sep or not qid:
                raise InputError(f"{path}:{lineno}: expected 'query-id<TAB>text'")
            records.append(TextRecord(qid, text))
    return records


def read_beir_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR ``qrels/<split>.tsv`` (header ``query-id corpus-id score``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such qrels file")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (lineno == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise InputError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
            try:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
            except ValueError:
                raise InputError(f"{path}:{lineno}: relevance {row[2]!r} is not an integer") from None
    return qrels


@dataclass
class Dataset:
    """A test collection: documents, queries of one split, and where its qrels are."""
    name: str
    corpus: list[TextRecord]
    queries: list[TextRecord]
    qrels: dict[str, dict[str, int]] | None
    reports: list[ReadReport]


def resolve_beir_folder(name_or_path: str | Path) -> Path:
    """A BEIR folder given as a path, or a name found under $SPLARE_BEIR_DIR or the packaged data."""
    path = Path(name_or_path)
    if (path / "corpus.jsonl").is_file():
        return path
    roots = beir_roots()
    for root in roots:
        if (root / str(name_or_path) / "corpus.jsonl").is_file():
            return root / str(name_or_path)
    if path.exists():
        raise InputError(f"{path}: not a BEIR folder (no corpus.jsonl)")
    known = sorted(p.name for r in roots if r.is_dir() for p in r.iterdir() if (p / "corpus.jsonl").is_file())
    raise InputError(f"unknown dataset {str(name_or_path)!r}: not a BEIR folder, and not one of {known} "
                     f"(searched {', '.join(map(str, roots))})")


def load_beir(folder: str | Path, split: str = "test", need_qrels: bool = False) -> Dataset:
    """Load a BEIR folder; queries are those judged in ``qrels/<split>.tsv`` (all queries if it is absent)."""
    folder = resolve_beir_folder(folder)
    corpus_report = ReadReport(str(folder / "corpus.jsonl"))
    corpus = read_jsonl(folder / "corpus.jsonl", corpus_report)
    reports = [corpus_report]
    qrels_path = folder / "qrels" / f"{split}.tsv"
    qrels = read_beir_qrels(qrels_path) if qrels_path.is_file() else None
    if qrels is None and need_qrels:
        raise InputError(f"{qrels_path}: no qrels for split {split!r} in BEIR folder {folder}")
    queries: list[TextRecord] = []
    if (folder / "queries.jsonl").is_file():
        query_report = ReadReport(str(folder / "queries.jsonl"))
        queries = read_jsonl(folder / "queries.jsonl", query_report)
        reports.append(query_report)
        if qrels is not None:
            queries = [q for q in queries if q.id in qrels]
    elif need_qrels:
        raise InputError(f"{folder}: BEIR folder has no queries.jsonl")
    return Dataset(folder.name, corpus, queries, qrels, reports)


def load_ir_datasets(dataset_id: str) -> Dataset:
    """Load an ir_datasets id (downloads on first use, so it needs network once)."""
    import ir_datasets

    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise InputError(f"unknown ir_datasets id {dataset_id!r} (see https://ir-datasets.com)") from None
    report = ReadReport(f"ir_datasets:{dataset_id}")

    def docs():
        for doc in ds.docs_iter():
            fields = doc._asdict()
            text = join_text(*(str(fields[k]) for k in ("title", "text") if fields.get(k)))
            yield f"{dataset_id} doc {doc.doc_id}", TextRecord(str(doc.doc_id), text)

    corpus = _dedup(docs(), report) if ds.has_docs() else []
    queries = [TextRecord(str(q.query_id), q.text) for q in ds.queries_iter()] if ds.has_queries() else []
    qrels = None
    if ds.has_qrels():
        qrels = {}
        for qrel in ds.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
    return Dataset(dataset_id.replace("/", "-"), corpus, queries, qrels, [report])


def looks_like_ir_datasets_id(spec: str) -> bool:
    return not Path(spec).exists() and "/" in spec and not spec.endswith((".jsonl", ".json", ".tsv"))


def write_trec_qrels(qrels: dict[str, dict[str, int]], path: str | Path) -> Path:
    """Write qrels in the 4-column TREC format trec_eval reads."""
    with atomic_write(path) as out:
        for qid in sorted(qrels):
            for docid, rel in sorted(qrels[qid].items()):
                out.write(f"{qid} 0 {docid} {rel}\n")
    return Path(path)


def beir_roots() -> list[Path]:
    """Where bare dataset names are looked up: $SPLARE_BEIR_DIR (colon-separated), then the packaged data."""
    roots = [Path(p) for p in os.environ.get("SPLARE_BEIR_DIR", "").split(os.pathsep) if p]
    return roots + [PACKAGED_BEIR]


def list_beir_folders() -> list[Path]:
    """Every BEIR folder under ``beir_roots()``, one per name (the first root wins)."""
    found: dict[str, Path] = {}
    for root in beir_roots():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / "corpus.jsonl").is_file():
                    found.setdefault(folder.name, folder)
    return list(found.values())


def write_beir_slice(source: str | Path, dest: str | Path, n_queries: int = 40, n_docs: int = 300,
                     split: str = "test", seed: int = 0) -> Path:
    """A small BEIR folder for smoke runs: the first ``n_queries`` judged queries of ``split``,
    their relevant documents, and random other documents up to ``n_docs`` (seeded)."""
    import random

    source, dest = resolve_beir_folder(source), Path(dest)
    full = load_beir(source, split, need_qrels=True)
    qids = [q.id for q in full.queries][:n_queries]
    relevant = {d for q in qids for d in full.qrels[q]}
    others = sorted(r.id for r in full.corpus if r.id not in relevant)
    keep = relevant | set(random.Random(seed).sample(others, max(0, min(len(others), n_docs - len(relevant)))))
    wanted = set(qids)
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    for name, ids in (("corpus.jsonl", keep), ("queries.jsonl", wanted)):
        with open(source / name, encoding="utf-8") as f, open(dest / name, "w", encoding="utf-8") as out:
            out.writelines(line for line in f if line.strip() and json.loads(line)["_id"] in ids)
    with open(dest / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines(f"{q}\t{d}\t{r}\n" for q in qids for d, r in full.qrels[q].items())
    return dest


def packaged_corpus(name: str) -> Path | None:
    """The packaged text-only corpus ``name`` (e.g. ``llm-prose-smollm2``), a JSONL file, or None."""
    path = PACKAGED_CORPORA / f"{name}.jsonl"
    return path if "/" not in name and path.is_file() else None


def training_texts(source: str) -> list[str]:
    """Documents, and the queries of every split but test, of a BEIR folder, JSONL file, packaged text-only
    corpus or ir_datasets id.

    Test queries are left out even though no judgment is used: test splits are for final figures only."""
    text_file = source if Path(source).is_file() else packaged_corpus(source)
    if text_file is not None:
        return [r.text for r in read_jsonl(text_file) if r.text]
    if looks_like_ir_datasets_id(source):
        ds = load_ir_datasets(source)
        return [r.text for r in ds.corpus + ds.queries if r.text]
    ds = load_beir(source, split="__all__")
    keep = non_test_query_ids(resolve_beir_folder(source))  # once: the qrels files are read, not per query
    queries = [q for q in ds.queries if q.id in keep]
    return [r.text for r in ds.corpus + queries if r.text]


def non_test_query_ids(folder: Path) -> set[str]:
    """Ids of the queries judged in a BEIR folder's qrels files other than test (none if it has only test)."""
    ids: set[str] = set()
    for qrels in sorted((folder / "qrels").glob("*.tsv")):
        if qrels.stem != "test":
            ids |= set(read_beir_qrels(qrels))
    return ids
