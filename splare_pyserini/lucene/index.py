"""Build Lucene indexes with Anserini through Pyserini, on the package's JVM.

Impact index of encoded vectors (``JsonVectorCollection``, ``-impact -pretokenized``)
and the BM25 baseline of a BEIR corpus (``JsonCollection``). The index is built in a
temporary folder and renamed into place, so a killed job leaves nothing half-built.

    python -m splare_pyserini.index --input encode/scifact --index indexes/scifact-splare
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import check_fields, option, parse_config, require
from ..datasets import iter_json_lines, join_text, resolve_beir_folder
from ..errors import ArtifactError, InputError, cli_main
from ..io import atomic_dir, atomic_write
from ..model.settings import INFO_FILE
from .jvm import autoclass

INDEX_INFO = "splare_index_info.json"
# Anserini's analyzers by ``-language`` (IndexCollection and SimpleSearcher.set_language agree on these):
# en is its default English analyzer (Porter stemming, stopwords); ha, so, sw, yo split on whitespace only.
BM25_LANGUAGES = ("en", "ar", "bn", "da", "de", "es", "fa", "fi", "fr", "hi", "hu", "id", "it", "ja", "ko", "nl",
                  "no", "pl", "pt", "ru", "sv", "te", "th", "tr", "uk", "zh", "ha", "so", "sw", "yo")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    input: str = option(help="encode output folder (or a BEIR folder with --bm25)")
    index: str = option(help="index folder to create")
    bm25: bool = option(False, "index a BEIR corpus (title + text) for the BM25 baseline")
    language: str = option("en", "analyzer of the BM25 index (Anserini's -language)", choices=BM25_LANGUAGES)
    threads: int = option(1, "indexing threads")
    overwrite: bool = option(False, "rebuild an existing index")

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.threads >= 1, f"threads: must be >= 1, got {self.threads}")


def run_anserini_indexer(args: list[str]) -> None:
    """Call Anserini's IndexCollection in-process (it returns; it does not exit)."""
    autoclass("io.anserini.index.IndexCollection").main(args)


def _refuse_existing(index_dir: Path, overwrite: bool) -> None:
    if index_dir.exists() and not overwrite:
        raise ArtifactError(f"{index_dir} exists; pass --overwrite to rebuild it")


def _vector_folder(path: Path) -> tuple[Path, dict | None]:
    """An encode output folder (has corpus/ and encode_info.json) or a bare folder of JSONL vectors."""
    if (path / "corpus").is_dir():
        info_path = path / INFO_FILE
        return path / "corpus", (json.loads(info_path.read_text()) if info_path.is_file() else None)
    if path.is_dir():
        return path, None
    raise InputError(f"--input {path}: no such folder of encoded vectors")


def index_vectors(input_dir: str | Path, index_dir: str | Path, threads: int = 1, overwrite: bool = False) -> Path:
    """Impact-index JsonVectorCollection files; record the encoder settings next to the index."""
    corpus_dir, info = _vector_folder(Path(input_dir))
    files = sorted(p for p in corpus_dir.iterdir() if p.suffix in (".jsonl", ".json", ".gz") and not p.name.startswith("."))
    if not files:
        raise InputError(f"{corpus_dir}: no vector files (*.jsonl) to index")
    expected = ((info or {}).get("corpus") or {}).get("size")
    if expected is not None:
        have = sum(sum(1 for _ in open(f, "rb")) for f in files)
        if have != expected:
            raise ArtifactError(f"{corpus_dir}: holds {have} of {expected} documents; "
                                "finish encoding (rerun encode, all shards) before indexing")
    index_dir = Path(index_dir)
    _refuse_existing(index_dir, overwrite)
    with atomic_dir(index_dir) as tmp:
        run_anserini_indexer(["-collection", "JsonVectorCollection", "-input", str(corpus_dir), "-index", str(tmp),
                              "-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized",
                              "-threads", str(threads)])
        with atomic_write(tmp / INDEX_INFO) as out:
            # "vectors": where the documents' texts are (their "contents"), for explain's argmax tokens
            json.dump({"kind": "splare-impact", "encoder": info, "vectors": str(corpus_dir.resolve())}, out,
                      indent=2, sort_keys=True)
    return index_dir


def index_bm25(beir_folder: str | Path, index_dir: str | Path, threads: int = 1, overwrite: bool = False,
               language: str = "en") -> Path:
    """BM25 baseline: the BEIR corpus as JsonCollection (contents = title + text), Anserini defaults, with
    the analyzer of ``language`` (recorded in the index; :func:`..search.open_bm25_searcher` reads it)."""
    if language not in BM25_LANGUAGES:
        raise InputError(f"language: {language!r} is not an Anserini analyzer; choose from {', '.join(BM25_LANGUAGES)}")
    folder = resolve_beir_folder(beir_folder)
    index_dir = Path(index_dir)
    _refuse_existing(index_dir, overwrite)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=index_dir.parent, prefix=f".{index_dir.name}.collection-") as coll, \
            atomic_dir(index_dir) as tmp:
        with open(Path(coll) / "docs.jsonl", "w", encoding="utf-8") as out:
            for lineno, obj in iter_json_lines(folder / "corpus.jsonl"):
                if "_id" not in obj:
                    raise InputError(f"{folder / 'corpus.jsonl'}:{lineno}: record has no '_id'")
                text = join_text(obj.get("title"), obj.get("text"))
                out.write(json.dumps({"id": str(obj["_id"]), "contents": text}, ensure_ascii=False) + "\n")
        run_anserini_indexer(["-collection", "JsonCollection", "-input", coll, "-index", str(tmp),
                              "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
                              "-language", language])
        with atomic_write(tmp / INDEX_INFO) as out:
            json.dump({"kind": "bm25", "source": str(folder), "language": language}, out, ensure_ascii=False)
    return index_dir


def read_index_info(index_dir: str | Path) -> dict | None:
    path = Path(index_dir) / INDEX_INFO
    return json.loads(path.read_text()) if path.is_file() else None


def index_size_bytes(index_dir: str | Path) -> int:
    """Bytes of Lucene files (our own info file excluded)."""
    return sum(p.stat().st_size for p in Path(index_dir).iterdir() if p.is_file() and p.name != INDEX_INFO)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(IndexConfig, argv, "python -m splare_pyserini.index", __doc__)
    if cfg.bm25:
        path = index_bm25(cfg.input, cfg.index, cfg.threads, cfg.overwrite, cfg.language)
    else:
        path = index_vectors(cfg.input, cfg.index, cfg.threads, cfg.overwrite)
    log.info("index %s: %.1f MB", path, index_size_bytes(path) / 1e6)


cli = cli_main(main)

if __name__ == "__main__":
    cli()
