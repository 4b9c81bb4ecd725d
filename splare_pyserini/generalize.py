"""Leave-one-out generalization: for each set, models that saw nothing of it, scored on its test split.

For every held-out set H among ``--datasets``, a SPLARE model and its vocabulary twin are trained by the
same recipe (same backbone, layer, sources, steps, teacher) on every *other* set: their train
judgments (where they have a train split) and their unlabeled corpus text; nothing of H (no queries,
judgments or corpus text). Both are scored on H's test split next to BM25, dense MiniLM, dense mpnet,
SPLADE-tiny, the shipped default, and the hybrid of leave-one-out SPLARE with BM25 (reciprocal-rank
fusion through Pyserini). Every row says what its model saw of H.

    python -m splare_pyserini.generalize --output runs/generalize

Each trained model and each scored row is cached under ``--output`` (a rerun resumes a killed
training and recomputes only rows whose settings changed); writes ``generalize.json`` and
``generalize.md``. Test splits only score: no setting here is chosen by them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import child
from .config import check_fields, config_to_argv, option, parse_config, require
from .datasets import Dataset, load_beir, resolve_beir_folder
from .errors import ArtifactError, cli_main
from .io import load_row, markdown_table, save_row, write_json
from .lucene.fusion import RrfFusionSettings
from .lucene.significance import DEFAULT_PERMUTATIONS, compare_across, compare_runs
from .model.artifacts import BASE_MODEL, MPNET, content_hash
from .model.checkpoint import CHECKPOINT_FILE, read_checkpoint
from .model.dense import COMPUTE_DTYPES
from .model.settings import DEFAULT_D_SAE, DEFAULT_K, DEFAULT_LAYER, DEFAULT_MODEL, INFO_FILE, MLM, VOCAB
from .pipeline import (RunSettings, link_corpus_vectors, run_bm25_system, run_dense_system, run_fused_system,
                       run_sparse_system)
from .training.losses import DISTILLATIONS
from .training.negatives import SOURCES as NEGATIVES

log = logging.getLogger(__name__)
SHIPPED_SETS = ("scifact", "nfcorpus", "cranfield", "cacm")
SYSTEMS = ("bm25", "dense", "dense-mpnet", "splade-tiny", "default", "default-hybrid", "splare-loo", "vocab-loo",
           "hybrid")
FUSED = {"hybrid": "splare-loo", "default-hybrid": "default"}  # fusion(system, BM25): RRF, or --fusion
LABELS = {"bm25": "BM25", "dense": "dense MiniLM", "dense-mpnet": "dense mpnet", "splade-tiny": "SPLADE-tiny",
          "default": "shipped default", "splare-loo": "SPLARE, leave-one-out",
          "vocab-loo": "vocabulary twin, leave-one-out", "hybrid": "RRF(SPLARE leave-one-out, BM25)",
          "default-hybrid": "RRF(shipped default, BM25)"}
# (A, B) pairs tested per held-out set when both rows are scored: is B's gap over A more than noise?
PAIRED_TESTS = (("vocab-loo", "splare-loo"), ("splade-tiny", "splare-loo"), ("bm25", "splare-loo"), ("bm25", "hybrid"))


@dataclass(frozen=True)
class GeneralizeConfig:
    output: str = option("runs/generalize", "models, runs, generalize.json and generalize.md")
    datasets: tuple[str, ...] = option(SHIPPED_SETS, "the sets, each held out in turn and a source for the others")
    held_out: tuple[str, ...] | None = option(None, "the sets to hold out and score (default: every one of --datasets)")
    systems: tuple[str, ...] = option(SYSTEMS, f"systems to score, of: {', '.join(SYSTEMS)}")
    steps: int = option(150, "training steps of each leave-one-out model")
    train_batch_size: int = option(16, "training queries per step")
    train_weight: float = option(1.0, "sampling weight of each train-judgment source (0: none, the corpus-only "
                                      "ablation)")
    corpus_weight: float = option(0.5, "sampling weight of each unlabeled-corpus source (0: none, the "
                                       "judgments-only ablation)")
    own_corpus_weight: float = option(0.0, "sampling weight of the held-out set's own unlabeled corpus text in its "
                                           "SPLARE and twin models (0: none, leave-one-out proper; > 0: a user who "
                                           "has the collection but no judgments; the rows say they saw its text)")
    distill: str | None = option("kl", "distillation from the teacher", choices=DISTILLATIONS)
    teacher: str = option(MPNET, "dense teacher (its embeddings are cached under --output, shared by all models)")
    teacher_dtype: str = option("float32", "the teacher's matmuls (train --teacher-dtype; bfloat16 is faster on a "
                                           "CPU with bfloat16 instructions)", choices=COMPUTE_DTYPES)
    model: str = option(BASE_MODEL, "backbone the leave-one-out models fine-tune")
    sae: str | None = option(None, "SAE of the leave-one-out SPLARE models (frozen); default: one trained per "
                                   "held-out set with sae-lens on the other sets' documents and train queries")
    sae_width: int = option(DEFAULT_D_SAE, "latents of each leave-one-out SAE (without --sae)")
    sae_k: int = option(DEFAULT_K, "latents active per token of each leave-one-out SAE (without --sae)")
    sae_steps: int = option(5000, "training steps of each leave-one-out SAE (without --sae; enough to converge)")
    layer: int | None = option(None, "layer of both models (default: the SAE's recorded layer; without --sae, "
                                     f"{DEFAULT_LAYER}, the shipped SAE's, for the SAEs trained here and the twin)")
    token_k: int | None = option(None, "latents the SAE keeps per token in the leave-one-out SPLARE models, at "
                                       "most its own k (default: its own)")
    recon_weight: float = option(0.0, "weight of the frozen SAE's reconstruction error in the leave-one-out SPLARE "
                                      "models' loss (train --recon-weight; 0: off)")
    negatives: str = option("bm25", "hard negatives of the training sources", choices=NEGATIVES)
    temperature: float = option(5.0, "InfoNCE temperature of the SPLARE models (their dot products are divided by "
                                     "it; 5 was chosen over 1 and 10 on NFCorpus dev)")
    vocab_temperature: float = option(5.0, "InfoNCE temperature of the twin (its scores spread wider than the SAE's)")
    seed: int = option(0, "training seed")
    split: str = option("test", "split of each held-out set the rows are scored on (dev: for choosing settings)")
    run: RunSettings = field(default_factory=RunSettings)
    fusion: RrfFusionSettings = field(default_factory=RrfFusionSettings)

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [s for s in self.systems if s not in SYSTEMS]
        require(not unknown, f"systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
        require(len(self.datasets) >= 2, "datasets: leave-one-out needs at least two sets")
        require(set(self.held_out or ()) <= set(self.datasets), "held_out: every held-out set must be in --datasets")
        require(self.steps >= 1 and self.train_batch_size >= 1, "steps and train_batch_size: must be >= 1")
        require(self.train_weight >= 0 and self.corpus_weight >= 0 and self.train_weight + self.corpus_weight > 0,
                "train_weight and corpus_weight: must be >= 0, and not both 0")
        require(self.own_corpus_weight >= 0, f"own_corpus_weight: must be >= 0, got {self.own_corpus_weight}")
        require(min(self.sae_width, self.sae_k, self.sae_steps) >= 1 and self.sae_k <= self.sae_width,
                "sae_width, sae_k, sae_steps: must be >= 1, and sae_k <= sae_width")
        require(self.layer is None or self.layer >= 1, f"layer: must be >= 1, got {self.layer}")
        require(self.token_k is None or self.token_k >= 1, f"token_k: must be >= 1, got {self.token_k}")
        require(self.recon_weight >= 0, f"recon_weight: must be >= 0, got {self.recon_weight}")
        require(self.temperature > 0 and self.vocab_temperature > 0, "temperature and vocab_temperature: must be > 0")


def loo_sources(held_out: str, datasets: tuple[str, ...], train_weight: float, corpus_weight: float,
                own_corpus_weight: float = 0.0) -> tuple[str, ...]:
    """Every other set's train judgments (if it has a train split) and unlabeled corpus text; with
    ``own_corpus_weight``, the held-out set's own unlabeled corpus text too (never its queries or judgments)."""
    sources = []
    for name in datasets:
        if name == held_out:
            continue
        folder = resolve_beir_folder(name)
        if train_weight > 0 and (folder / "qrels" / "train.tsv").is_file():
            sources.append(f"{name}:train={train_weight:g}")
        if corpus_weight > 0:
            sources.append(f"{name}:corpus={corpus_weight:g}")
    require(bool(sources), f"no training source is left without {held_out} (train_weight {train_weight:g}, "
                           f"corpus_weight {corpus_weight:g})")
    if own_corpus_weight > 0:
        sources.append(f"{held_out}:corpus={own_corpus_weight:g}")
    return tuple(sources)


def recipe_tag(fields: dict) -> str:
    """A short name for a recipe: a model folder is reused only by the recipe that trained it."""
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def run_child(module: str, argv: list[str], what: Path) -> None:
    """Train in a child interpreter: this process has booted the JVM (BM25, indexing), and libtorch
    training under the JVM's signal handlers crashes (SIGSEGV); the child also resumes a killed run,
    and a killed run ends its child (:mod:`splare_pyserini.child`)."""
    returncode = child.run_child(module, argv).returncode
    if returncode != 0:
        raise ArtifactError(f"training {what} failed (exit {returncode}); rerun to resume")


def loo_sae(cfg: GeneralizeConfig, held_out: str) -> str:
    """The SAE of held-out set H's SPLARE model: ``--sae``, or one trained on every other set's text."""
    if cfg.sae is not None:
        return cfg.sae
    from .training.sae import TrainSaeConfig

    sources = tuple(name for name in cfg.datasets if name != held_out)
    recipe = {"sources": sources, "model": cfg.model, "layer": cfg.layer or DEFAULT_LAYER, "d_sae": cfg.sae_width,
              "k": cfg.sae_k, "steps": cfg.sae_steps, "seed": cfg.seed}
    folder = Path(cfg.output) / "models" / f"sae-without-{held_out}-{recipe_tag(recipe)}"
    if not (folder / "cfg.json").is_file():
        sae_cfg = TrainSaeConfig(input=sources, output=str(folder), model=cfg.model, layer=recipe["layer"],
                                 d_sae=cfg.sae_width, k=cfg.sae_k, steps=cfg.sae_steps, seed=cfg.seed)
        run_child("splare_pyserini.train_sae", config_to_argv(sae_cfg), folder)
    return str(folder)


def train_loo(cfg: GeneralizeConfig, held_out: str, projection: str) -> Path:
    """The leave-one-out model (``projection``: an SAE, or the vocabulary twin), trained or resumed."""
    from .model.projection import load_sae, recorded_layer
    from .training.trainer import TrainConfig

    twin = projection == VOCAB
    layer = cfg.layer or (DEFAULT_LAYER if twin and cfg.sae is None else recorded_layer(load_sae(cfg.sae or projection)))
    fields = dict(sources=loo_sources(held_out, cfg.datasets, cfg.train_weight, cfg.corpus_weight,
                                      cfg.own_corpus_weight), model=cfg.model,
                  sae=projection, layer=layer, steps=cfg.steps, batch_size=cfg.train_batch_size,
                  negatives=cfg.negatives, temperature=cfg.vocab_temperature if twin else cfg.temperature,
                  distill=cfg.distill, teacher=cfg.teacher, seed=cfg.seed)
    if cfg.token_k and not twin:
        fields["token_k"] = cfg.token_k  # only when asked: the recipe tags of earlier models stay as they were
    if cfg.recon_weight and not twin:
        fields["recon_weight"] = cfg.recon_weight
    if cfg.distill and cfg.teacher_dtype != "float32":
        fields["teacher_dtype"] = cfg.teacher_dtype  # in the tag only when asked, as token_k
    name = f"{'vocab' if twin else 'splare'}-without-{held_out}-{recipe_tag(fields)}"
    train_cfg = TrainConfig(output=str(Path(cfg.output) / "models" / name),
                            teacher_cache=str(Path(cfg.output) / "teacher"), **fields)
    checkpoint = Path(train_cfg.output) / "checkpoint"
    if not (checkpoint / CHECKPOINT_FILE).is_file():
        run_child("splare_pyserini.train", config_to_argv(train_cfg), Path(train_cfg.output))
    return checkpoint


def sae_saw(sae: str, held_out: str) -> bool:
    """Whether an SAE's recorded training text (its training.json) includes the held-out set."""
    from .model.artifacts import resolve_path

    record = Path(resolve_path(sae)) / "training.json"
    if not record.is_file():
        return False
    recorded = json.loads(record.read_text(encoding="utf-8"))
    sources = recorded.get("sources") or [recorded.get("source", "")]
    return any(Path(str(s)).name == held_out for s in sources)


def what_it_saw(system: str, held_out: str, default_training: dict, cfg: GeneralizeConfig | None = None) -> str:
    """What a system's model saw of the held-out set: nothing / unlabeled corpus text / train judgments."""
    if system in ("splare-loo", "vocab-loo", "hybrid") and cfg is not None and cfg.own_corpus_weight > 0:
        return "unlabeled corpus text"
    if system in ("splare-loo", "hybrid") and cfg is not None and cfg.sae is not None and sae_saw(cfg.sae, held_out):
        return "unlabeled corpus text (its SAE's training text)"
    if system not in ("default", "default-hybrid"):
        return "nothing"
    from .training.sources import SourceSpec

    sources = default_training.get("sources") or ()
    specs = ([SourceSpec.parse(s) for s in sources] if sources else
             [SourceSpec(default_training.get("dataset", ""), "train" if default_training.get("mode") != "zero-shot"
                         else "corpus")])
    kinds = {s.kind for s in specs if Path(s.dataset).name == held_out}
    return "train judgments" if "train" in kinds else ("unlabeled corpus text" if kinds else "nothing")


def score_system(system: str, cfg: GeneralizeConfig, held_out: str, data: Dataset, folder: Path) -> dict:
    from .model.dense import DenseEncoder
    from .model.encoder import SaeSparseEncoder

    if system == "bm25":
        return run_bm25_system(data, resolve_beir_folder(held_out), folder, cfg.run, split=cfg.split)
    if system in ("dense", "dense-mpnet"):
        return run_dense_system(DenseEncoder(BASE_MODEL if system == "dense" else MPNET), data, folder, cfg.run,
                                split=cfg.split)
    if system in FUSED:
        return run_fused_system(data, [folder.parent / FUSED[system], folder.parent / "bm25"], folder, cfg.run,
                                split=cfg.split, fusion=cfg.fusion)
    encoder = {"splade-tiny": lambda: SaeSparseEncoder("splade-tiny", sae=MLM),
               "default": lambda: SaeSparseEncoder(),
               "splare-loo": lambda: SaeSparseEncoder(str(train_loo(cfg, held_out, loo_sae(cfg, held_out)))),
               "vocab-loo": lambda: SaeSparseEncoder(str(train_loo(cfg, held_out, VOCAB)))}[system]()
    for other in other_splits(folder, held_out):  # the same corpus, encoded for another split's row
        if (other / "vectors" / INFO_FILE).is_file() and link_corpus_vectors(other, folder, encoder.info()):
            log.info("%s %s: corpus vectors and index reused from %s", held_out, system, other)
            break
    return run_sparse_system(encoder, data, folder, cfg.run, split=cfg.split)


def other_splits(folder: Path, held_out: str) -> list[Path]:
    """The same system's folders for the held-out set's other splits (``nfcorpus``, ``nfcorpus.dev``)."""
    root = folder.parent.parent
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [root / n / folder.name for n in names
            if n != folder.parent.name and (n == held_out or n.startswith(f"{held_out}."))]


def row_key(system: str, cfg: GeneralizeConfig, held_out: str) -> dict:
    """What a row's figures depend on: its system, the run settings and, for trained rows, the recipe."""
    key: dict = {"system": system, "held_out": held_out, "split": cfg.split, "run": cfg.run.key()}
    if system in ("splare-loo", "vocab-loo", "hybrid"):
        key["recipe"] = {k: v for k, v in asdict(cfg).items()
                         if k not in ("output", "systems", "run", "fusion", "held_out", "split")}
        if cfg.teacher_dtype == "float32":  # a setting added later: rows scored before it keep their keys
            del key["recipe"]["teacher_dtype"]
    if system in ("default", "default-hybrid"):
        key["model"] = content_hash(DEFAULT_MODEL)
    if system in FUSED and not cfg.fusion.is_rrf():  # RRF rows, scored before --fusion, keep their keys
        key["fusion"] = asdict(cfg.fusion)
    return key


def row_labels(cfg: GeneralizeConfig) -> dict[str, str]:
    """Each system's row name; the fused rows say how they were fused."""
    fused_of = {"hybrid": "SPLARE leave-one-out", "default-hybrid": "shipped default"}
    return {**LABELS, **{fused: cfg.fusion.label(first, "BM25") for fused, first in fused_of.items()}}


def run_generalize(cfg: GeneralizeConfig) -> dict:
    output = Path(cfg.output)
    default_training = (read_checkpoint(DEFAULT_MODEL).provenance or {}).get("training", {})
    order = [s for s in SYSTEMS if s in cfg.systems]
    for fused, system in FUSED.items():  # fusion reads the two runs it fuses
        if fused in order:
            order = [s for s in ("bm25", system) if s not in order] + order
    results: dict[str, dict[str, dict]] = {}
    tests: dict[str, list[dict]] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for held_out in cfg.held_out or cfg.datasets:
        data = load_beir(resolve_beir_folder(held_out), cfg.split, need_qrels=True)
        results[held_out] = {}
        for system in order:
            folder = output / scored_name(held_out, cfg.split) / system
            key = row_key(system, cfg, held_out)
            row = load_row(folder / "result.json", key)
            if row is None:
                if folder.is_dir():  # another recipe's vectors and index: stale, and refused if reused
                    log.info("%s %s: settings changed, recomputing %s", held_out, system, folder)
                    shutil.rmtree(folder)
                log.info("%s %s: running", held_out, system)
                row = score_system(system, cfg, held_out, data, folder)
                row["saw"] = what_it_saw(system, held_out, default_training, cfg)
                save_row(folder / "result.json", key, row)
            if system in cfg.systems:
                results[held_out][system] = row
        tests[held_out] = paired_tests(results[held_out], output / scored_name(held_out, cfg.split), data.qrels)
        qrels[held_out] = data.qrels
    across = tests_across(results, output, cfg.split, qrels)
    stem = scored_name("generalize", cfg.split)
    write_json(output / f"{stem}.json", {"config": asdict(cfg), "results": results, "paired tests": tests,
                                         "paired tests across held-out sets": across})
    table = markdown(results, cfg.split, tests, across, row_labels(cfg))
    (output / f"{stem}.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return results


def scored_name(name: str, split: str) -> str:
    """Test rows keep the plain name; rows of another split are kept apart (``nfcorpus.dev``)."""
    return name if split == "test" else f"{name}.{split}"


def paired_tests(rows: dict[str, dict], folder: Path, qrels: dict[str, dict[str, int]]) -> list[dict]:
    """nDCG@10 of each pair in PAIRED_TESTS whose runs are both here, by the paired randomization test."""
    found = []
    for a, b in PAIRED_TESTS:
        runs = [folder / s / "run.trec" for s in (a, b)]
        if a in rows and b in rows and all(r.is_file() for r in runs):
            found.append({"A": a, "B": b, **compare_runs(qrels, *runs).as_dict()})
    return found


def tests_across(results: dict[str, dict[str, dict]], output: Path, split: str,
                 qrels: dict[str, dict[str, dict[str, int]]]) -> list[dict]:
    """Each pair of PAIRED_TESTS over every held-out set where both rows are scored (two sets or more):
    the macro average of the sets' differences, by the stratified randomization test."""
    found = []
    for a, b in PAIRED_TESTS:
        sets = [h for h, rows in results.items() if a in rows and b in rows
                and all((output / scored_name(h, split) / s / "run.trec").is_file() for s in (a, b))]
        if len(sets) >= 2:
            pairs = [(qrels[h], *(output / scored_name(h, split) / s / "run.trec" for s in (a, b))) for h in sets]
            found.append({"A": a, "B": b, "sets": sets, **compare_across(pairs).as_dict()})
    return found


def paired_line(t: dict, labels: dict[str, str] = LABELS) -> str:
    """One paired test as a markdown item; across sets, the sets it covers."""
    sets = f"; {', '.join(t['sets'])}" if "sets" in t else ""
    return (f"- {labels[t['B']]} − {labels[t['A']]}: {t['B - A']:+.4f} nDCG@10, p = {t['p (randomization)']:.3g} "
            f"(better on {t['B wins']}, worse on {t['B losses']} of {t['queries']} queries{sets})")


def markdown(results: dict[str, dict[str, dict]], split: str = "test",
             tests: dict[str, list[dict]] | None = None, across: list[dict] | None = None,
             labels: dict[str, str] = LABELS) -> str:
    parts = []
    for held_out, rows in results.items():
        bm25 = rows.get("bm25", {}).get("nDCG@10")
        body = [[labels[s], row.get("saw", ""), f"{row['nDCG@10']:.4f}", f"{row['R@100']:.4f}",
                 f"{row['nDCG@10'] / bm25:.3f}" if bm25 else "", row.get("doc nnz", ""), row.get("terms", ""),
                 row.get("posting df", "")] for s, row in rows.items()]
        parts.append(f"**{held_out}** ({split})\n\n" + markdown_table(
            ("system", f"saw of {held_out}", "nDCG@10", "R@100", "nDCG@10 / BM25", "doc nnz", "terms",
             "posting df"), body))
        lines = [paired_line(t, labels) for t in (tests or {}).get(held_out, [])]
        if lines:
            parts.append(f"Paired randomization test (two-sided, {DEFAULT_PERMUTATIONS:,} sign flips):\n\n"
                         + "\n".join(lines))
    if across:
        parts.append("**Across held-out sets** (each set's mean difference weighs alike; stratified randomization "
                     "test, every query's sign flipped alone):\n\n"
                     + "\n".join(paired_line(t, labels) for t in across))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    run_generalize(parse_config(GeneralizeConfig, argv, "python -m splare_pyserini.generalize", __doc__))


cli = cli_main(main, resumable=True)

if __name__ == "__main__":
    cli()
