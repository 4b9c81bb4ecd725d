"""Where encoding time goes, stage by stage, against the floor.

The floor of a sparse encoder is what no implementation of the method can skip: tokenization, the
backbone's forward pass to the layer, and one dense ``d_in x d_sae`` matmul of the real tokens'
states with the projection's encoder matrix. Everything else (top-k selection and pooling, impact
quantization into ``{term: impact}`` dicts, the JSON lines Anserini reads) is overhead, and this
command says how much of each there is, on real documents, over the encoder's own length-sorted
batches:

    python -m splare_pyserini.bench.profile --dataset scifact --docs 512 --output runs/profile/scifact
    python -m splare_pyserini.bench.profile --dataset scifact --docs 2048 --device cuda --dtype bfloat16

On a GPU every stage is timed between device synchronizations (kernels run asynchronously, so an
unsynchronized timer measures the launch, not the work). With ``--dtype`` or ``--sae-dtype`` below
float32, ``--compare`` also encodes the documents at float32 and reports how many integer impacts the
lower precision changed: a precision is only free where the impacts stay (nearly) identical.

Stages are timed one after another on the same batches, best of ``--repeats`` rounds per stage, each
round timing every stage and the whole encode in turn (the machine is noisy); the encoder's projection
path (matmul, top-k, pooling) is timed whole and the floor's matmul alone, their difference being the
top-k and pooling overhead; ``encode`` times the whole ``encode_documents`` + JSON path in one go, so the
stage sum can be checked against it. Writes ``profile.json`` and prints a table.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import check_fields, option, parse_config, require
from ..datasets import load_beir, resolve_beir_folder
from ..errors import cli_main
from ..io import markdown_table, write_json
from ..model.settings import DEFAULT_MODEL, DTYPES, SAE_DTYPES

log = logging.getLogger(__name__)
STAGES = ("tokenize", "backbone", "projection, top-k and pooling", "quantize", "json lines")
FLOOR = ("tokenize", "backbone", "projection matmul")


@dataclass(frozen=True)
class ProfileConfig:
    dataset: str = option("scifact", "BEIR folder or name whose documents are encoded")
    output: str | None = option(None, "folder for profile.json (default: print only)")
    model: str = option(DEFAULT_MODEL, "model to profile (a name, checkpoint, or plain model with --sae)")
    sae: str | None = option(None, "SAE of a plain --model")
    docs: int = option(512, "documents encoded (the corpus's first N)")
    batch_size: int = option(32, "encoding batch size")
    repeats: int = option(3, "best of this many timings per stage")
    threads: int | None = option(None, "torch threads (default: torch's, all cores)")
    device: str = option("cpu", "torch device (cuda: every stage is timed between device synchronizations)")
    dtype: str = option("float32", "backbone precision", choices=DTYPES)
    sae_dtype: str = option("float32", "precision of the SAE matmul", choices=SAE_DTYPES)
    compare: bool = option(True, "below float32, count the impacts that differ from a float32 encoding")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("docs", "batch_size", "repeats"):
            require(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        require(self.threads is None or self.threads >= 1, f"threads: must be >= 1, got {self.threads}")


def best_of(repeats: int, fn: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    """Fastest of ``repeats`` calls; ``sync`` (a device synchronization) runs before and after each."""
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def device_sync(device: str) -> Callable[[], None]:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def device_name(device: str) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def impact_changes(reference: Sequence[dict[str, int]], other: Sequence[dict[str, int]]) -> dict:
    """How far ``other``'s integer impacts are from ``reference``'s, document by document: the share of
    (document, term) pairs whose impact differs (a term present in one only counts as a change), the
    largest change, and the share of documents whose vectors are identical."""
    pairs = changed = identical = 0
    largest = 0
    for a, b in zip(reference, other, strict=True):
        terms = a.keys() | b.keys()
        diffs = [abs(a.get(t, 0) - b.get(t, 0)) for t in terms]
        pairs += len(terms)
        moved = sum(d > 0 for d in diffs)
        changed += moved
        identical += moved == 0
        largest = max([largest, *diffs])
    return {"terms": pairs, "changed share": round(changed / max(pairs, 1), 6), "largest change": largest,
            "identical documents": round(identical / max(len(reference), 1), 4)}


def profile_encoding(encoder, records: Sequence, batch_size: int = 32, repeats: int = 3) -> dict:
    """Seconds per stage of encoding ``records`` with a ``SaeSparseEncoder``, the floor, the whole encode,
    and each as a share of the floor. Each stage runs on the previous stage's outputs, computed once
    untimed, so a stage's time is its own."""
    import torch

    from ..encode import _vector_line
    from ..model.backbone import length_sorted_batches
    from .systems import projection_matrix

    model = encoder.model
    device = getattr(encoder, "device", "cpu")
    sync = device_sync(device)
    texts = [r.text for r in records]
    batches = [list(idx) for idx in length_sorted_batches(encoder.token_lengths(texts), batch_size)]
    with torch.inference_mode():
        tokens = [encoder.tokenize([texts[i] for i in idx]) for idx in batches]
        hidden = [model.backbone(t["input_ids"], t["attention_mask"]) for t in tokens]
        real = [h[t["token_mask"].bool()] for h, t in zip(hidden, tokens)]
        lengths = [t["token_mask"].bool().sum(dim=1).tolist() for t in tokens]
        w = projection_matrix(model)
        pooled = [model.pool(x, n).float() for x, n in zip(real, lengths)]
        vectors = [encoder._quantize(p, False) for p in pooled]

        stages = {
            "tokenize": lambda: [encoder.tokenize([texts[i] for i in idx]) for idx in batches],
            "backbone": lambda: [model.backbone(t["input_ids"], t["attention_mask"]) for t in tokens],
            "projection matmul": lambda: [x.to(w.dtype) @ w for x in real],
            "projection, top-k and pooling": lambda: [model.pool(x, n) for x, n in zip(real, lengths)],
            "quantize": lambda: [encoder._quantize(p, False) for p in pooled],
            "json lines": lambda: [_vector_line(records[i], v) for idx, vs in zip(batches, vectors)
                                   for i, v in zip(idx, vs)],
        }

        def whole() -> None:
            for idx in batches:
                chunk = [records[i] for i in idx]
                for record, vector in zip(chunk, encoder.encode_documents([r.text for r in chunk], len(chunk))):
                    _vector_line(record, vector)
        stages["encode (whole, measured)"] = whole
        # repeats interleaved (every stage, then the whole encode, per round): a slow stretch of a noisy
        # machine then slows the floor's stages and the whole encode alike, not one of them
        seconds = dict.fromkeys(stages, float("inf"))
        for _ in range(repeats):
            for name, fn in stages.items():
                seconds[name] = min(seconds[name], best_of(1, fn, sync))
    floor = sum(seconds[name] for name in FLOOR)
    # what the encoder's projection path spends beyond the floor's matmul: top-k selection and pooling
    seconds["top-k and pooling beyond the matmul"] = (seconds["projection, top-k and pooling"]
                                                      - seconds["projection matmul"])
    return {"device": device_name(device), "documents": len(texts), "batch size": batch_size, "d_sae": model.dim,
            "tokens": sum(sum(n) for n in lengths), "torch threads": torch.get_num_threads(),
            "projection dtype": str(w.dtype).replace("torch.", ""), "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "floor seconds": round(floor, 4), "stage sum / floor": round(sum(seconds[n] for n in STAGES) / floor, 3),
            "encode / floor": round(seconds["encode (whole, measured)"] / floor, 3),
            "encode / backbone": round(seconds["encode (whole, measured)"] / seconds["backbone"], 3),
            "documents / s": round(len(texts) / seconds["encode (whole, measured)"], 1),
            "share of floor": {name: round(seconds[name] / floor, 3) for name in seconds}}


def table(profile: dict) -> str:
    kinds = {**{name: "floor" for name in FLOOR}, "projection, top-k and pooling": "encoder (its matmul is the floor's)",
             "top-k and pooling beyond the matmul": "overhead", "quantize": "overhead", "json lines": "overhead",
             "encode (whole, measured)": "all of it, in one go"}
    rows = [[name, f"{profile['seconds'][name]:.3f}", f"{profile['share of floor'][name]:.3f}", kind]
            for name, kind in kinds.items()]
    rows.append(["floor", f"{profile['floor seconds']:.3f}", "1.000", "tokenize + backbone + projection matmul"])
    return markdown_table(("stage", "seconds", "/ floor", "kind"), rows)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(ProfileConfig, argv, "python -m splare_pyserini.bench.profile", __doc__)
    import torch

    from ..model.encoder import SaeSparseEncoder

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records = load_beir(resolve_beir_folder(cfg.dataset), "test").corpus[:cfg.docs]
    chosen = {"sae": cfg.sae} if cfg.sae else {}
    encoder = SaeSparseEncoder(cfg.model, device=cfg.device, dtype=cfg.dtype, sae_dtype=cfg.sae_dtype, **chosen)
    profile = profile_encoding(encoder, records, cfg.batch_size, cfg.repeats)
    profile.update(dtype=cfg.dtype, sae_dtype=cfg.sae_dtype)
    if cfg.compare and (cfg.dtype, cfg.sae_dtype) != ("float32", "float32"):
        texts = [r.text for r in records]
        lower = encoder.encode_documents(texts, cfg.batch_size)
        del encoder
        reference = SaeSparseEncoder(cfg.model, device=cfg.device, **chosen).encode_documents(texts, cfg.batch_size)
        profile["impacts against float32"] = impact_changes(reference, lower)
    print(f"{profile['device']}, backbone {cfg.dtype}, SAE matmul {cfg.sae_dtype}: "
          f"{profile['documents / s']} documents/s, encode / floor {profile['encode / floor']}, "
          f"encode / backbone {profile['encode / backbone']}")
    print(table(profile))
    if "impacts against float32" in profile:
        print(f"impacts against float32: {profile['impacts against float32']}")
    if cfg.output:
        write_json(Path(cfg.output) / "profile.json", {"config": asdict(cfg), "profile": profile})


cli = cli_main(main)

if __name__ == "__main__":
    cli()
