"""Latent labels: for each latent, the tokens that activate it most and a few contexts. No JVM here.

``python -m splare_pyserini.label_latents`` writes them (see :func:`collect_labels`) to
``latent_labels.json`` next to the model: a trained checkpoint's folder, else the SAE's folder.
The file records the model's and SAE's content hashes, layer and width, and :func:`check_labels`
refuses labels made for another model. The file is not part of the model's content hash (see
``artifacts._SKIPPED_FILES``), so labelling a model does not change the identity of its indexes.
For the vocabulary twin the label of latent i is vocabulary token i; it needs no file.

Format (``splare-latent-labels/1``): a header object and ``latents``, one entry per latent id:
``{"id", "label", "fires", "docs", "tokens": [[token, peak activation, count], ...], "contexts": [...]}``,
or ``{"id", "dead": true}`` for a latent that never fired on the sample. ``tokens`` are the word
pieces ranked by their peak activation of the latent (ties: more firings, then the token string);
``contexts`` show the strongest firings in distinct texts, the firing token in ``«»``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ArtifactError
from .artifacts import resolve_path
from .attribution import first_of_groups, token_latent_entries
from .backbone import length_sorted_batches
from .checkpoint import read_checkpoint
from .settings import VOCAB

LABELS_FILE = "latent_labels.json"
FORMAT = "splare-latent-labels/1"
IDENTITY_KEYS = ("model_hash", "sae_hash", "layer", "d_sae")
LABEL_TOKENS = 3  # tokens joined into the short label
log = logging.getLogger(__name__)


def join_pieces(tokens: Sequence[str]) -> str:
    """Word pieces back to text (WordPiece ``##``, SentencePiece ``▁``, byte-level BPE ``Ġ``)."""
    out = ""
    for tok in tokens:
        if tok.startswith("##"):
            out += tok[2:]
        elif tok.startswith(("▁", "Ġ")):
            out += " " + tok[1:]
        else:
            out += (" " if out else "") + tok
    return out.strip()


def short_label(tokens: Sequence[Sequence]) -> str:
    """The label shown next to a latent: its top token strings, distinct, joined by '/'."""
    seen: list[str] = []
    for entry in tokens:
        name = str(entry[0])
        if name not in seen:
            seen.append(name)
        if len(seen) == LABEL_TOKENS:
            break
    return "/".join(seen)


@dataclass
class LatentLabels:
    """Labels of one model's latents, as read from (or written to) ``latent_labels.json``."""
    header: dict
    latents: list[dict]
    path: Path | None = None
    vocab: bool = False

    def label(self, latent: int) -> str | None:
        if 0 <= latent < len(self.latents):
            entry = self.latents[latent]
            return "(dead)" if entry.get("dead") else entry.get("label")
        return None

    def entry(self, latent: int) -> dict | None:
        return self.latents[latent] if 0 <= latent < len(self.latents) else None

    @property
    def alive_fraction(self) -> float:
        return sum(1 for e in self.latents if not e.get("dead")) / max(len(self.latents), 1)


def vocab_labels(tokenizer, d_sae: int) -> LatentLabels:
    """The vocabulary twin: latent i is token i, its own label."""
    names = tokenizer.convert_ids_to_tokens(list(range(d_sae)))
    return LatentLabels({"format": FORMAT, "vocabulary": True, "d_sae": d_sae},
                        [{"id": i, "label": n, "tokens": [[n, None, None]]} for i, n in enumerate(names)],
                        vocab=True)


def identity(info: dict) -> dict:
    """What labels must share with the index or encoder they describe."""
    return {k: info.get(k) for k in IDENTITY_KEYS}


def check_labels(labels: LatentLabels, info: dict, what: str = "the index") -> None:
    """Refuse labels made for another model, SAE, layer or width than ``info`` (an encoder's or index's)."""
    if labels.vocab:
        return
    diff = [k for k in IDENTITY_KEYS if info.get(k) is not None and labels.header.get(k) != info.get(k)]
    if diff:
        where = labels.path or "the labels"
        raise ArtifactError(f"{where} were made for another model than {what} ("
                            + ", ".join(f"{k}: labels {labels.header.get(k)!r} vs {info.get(k)!r}" for k in diff)
                            + "); rerun python -m splare_pyserini.label_latents for this model, or pass --labels none")


def read_labels(path: str | Path) -> LatentLabels:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this version reads {FORMAT!r}")
        latents = data.pop("latents")
        if [e["id"] for e in latents] != list(range(len(latents))):
            raise ValueError("latent ids are not 0..d_sae-1 in order")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such labels file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(f"{path}: not a valid latent labels file ({type(err).__name__}: {err})") from err
    return LatentLabels(data, latents, path)


def default_labels_path(settings) -> Path | None:
    """Where a model's labels live: a checkpoint's folder, else a local SAE folder (None: a hub SAE)."""
    ckpt = read_checkpoint(settings.model)
    if ckpt is not None:
        return ckpt.path / LABELS_FILE
    if settings.sae and settings.sae != VOCAB and Path(resolve_path(settings.sae)).is_dir():
        return Path(resolve_path(settings.sae)) / LABELS_FILE
    return None


def find_labels(info: dict) -> LatentLabels | None:
    """The labels stored with the model ``info`` describes (an encoder's or index's info), checked.

    The model's own folder is looked at first: labels there made for other weights are an error (stale
    labels). Labels in a shared SAE folder made over another backbone are passed over."""
    model_dir = Path(resolve_path(str(info.get("model", ""))))
    own = model_dir / LABELS_FILE if info.get("model") and model_dir.is_dir() else None
    if own is not None and own.is_file():
        labels = read_labels(own)
        check_labels(labels, info)
        return labels
    sae = info.get("sae")
    if sae and sae != VOCAB and Path(resolve_path(str(sae))).is_dir():
        path = Path(resolve_path(str(sae))) / LABELS_FILE
        if path.is_file():
            labels = read_labels(path)
            if all(labels.header.get(k) == info.get(k) for k in IDENTITY_KEYS if info.get(k) is not None):
                return labels
            log.info("%s describes the SAE over another backbone; not used", path)
    return None


# --- the labelling pass -----------------------------------------------------------------------------

@dataclass
class _Accumulator:
    d_sae: int
    vocab_size: int
    n_contexts: int
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # key, count, peak
    fires: np.ndarray = None  # type: ignore[assignment]
    docs: np.ndarray = None  # type: ignore[assignment]
    best: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # latent, value, doc, position
    pending: int = 0

    def __post_init__(self):
        self.fires = np.zeros(self.d_sae, np.int64)
        self.docs = np.zeros(self.d_sae, np.int64)

    @staticmethod
    def _reduce(keys, counts, peaks):
        uniq, inverse = np.unique(keys, return_inverse=True)
        total = np.bincount(inverse, weights=counts, minlength=uniq.size).astype(np.int64)
        top = np.full(uniq.size, -np.inf, np.float32)
        np.maximum.at(top, inverse, peaks)
        return uniq, total, top

    def add(self, doc: np.ndarray, pos: np.ndarray, token: np.ndarray, latent: np.ndarray, value: np.ndarray):
        self.pairs.append(self._reduce(latent * self.vocab_size + token, np.ones(latent.size), value))
        self.pending += self.pairs[-1][0].size
        if self.pending > 4_000_000:  # fold the batches into one table now and then (memory), not every batch
            self.pairs = [self._reduce(*map(np.concatenate, zip(*self.pairs)))]
            self.pending = 0
        self.fires += np.bincount(latent, minlength=self.d_sae)
        per_doc = first_of_groups(doc * self.d_sae + latent, value, pos)  # strongest firing per (text, latent)
        self.docs += np.bincount(latent[per_doc], minlength=self.d_sae)
        cand = (latent[per_doc], value[per_doc], doc[per_doc], pos[per_doc])
        if self.best is not None:
            cand = tuple(np.concatenate([a, b]) for a, b in zip(self.best, cand))
        lat, val, dc, ps = cand
        order = np.lexsort((ps, dc, -val, lat))
        lat_sorted = lat[order]
        starts = np.searchsorted(lat_sorted, lat_sorted, side="left")
        keep = order[(np.arange(order.size) - starts) < self.n_contexts]
        self.best = tuple(a[keep] for a in (lat, val, dc, ps))

    def token_table(self):
        return self._reduce(*map(np.concatenate, zip(*self.pairs))) if self.pairs else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def context(tokens: Sequence[str], position: int, window: int) -> str:
    """``window`` word pieces either side of ``position``, joined to text, the firing piece in ``«»``."""
    lo, hi = max(0, position - window), min(len(tokens), position + 1 + window)
    pieces = list(tokens[lo:hi])
    here = pieces[position - lo]
    lead = 2 if here.startswith("##") else (1 if here.startswith(("▁", "Ġ")) else 0)
    pieces[position - lo] = here[:lead] + "«" + here[lead:] + "»"
    return ("… " if lo > 0 else "") + join_pieces(pieces) + (" …" if hi < len(tokens) else "")


@torch.inference_mode()
def collect_labels(encoder, texts: Sequence[str], batch_size: int = 16, top_tokens: int = 8, contexts: int = 2,
                   window: int = 6, progress: Callable[[int], None] | None = None) -> LatentLabels:
    """Run ``encoder`` (a ``SaeSparseEncoder`` over SAE latents) over ``texts`` (document side) and label
    each latent with its top ``top_tokens`` word pieces by peak activation (with firing counts) and the
    ``contexts`` strongest firings in distinct texts (``window`` tokens either side). Deterministic for the
    same texts and batch size: ties break on token string, text order and position."""
    model, tokenizer = encoder.model, encoder.tokenizer
    d_sae = encoder.dim
    vocab_size = max(len(tokenizer), int(getattr(tokenizer, "vocab_size", 0) or 0))
    acc = _Accumulator(d_sae, vocab_size, contexts)
    doc_tokens: list[list[int]] = [[] for _ in texts]
    lengths = encoder.token_lengths(texts)
    n_tokens = 0
    for idx in length_sorted_batches(lengths, batch_size):
        batch = encoder.tokenize([texts[i] for i in idx])
        mask = batch["token_mask"]
        hidden = model.backbone(batch["input_ids"], batch["attention_mask"])
        rows, latent, value = token_latent_entries(model, hidden[mask])
        # which text and which position (among its real tokens) each token row is
        text_of_row = torch.nonzero(mask)[:, 0].cpu().numpy()
        token_ids = batch["input_ids"][mask].cpu().numpy().astype(np.int64)
        pos_of_row = np.concatenate([np.arange(n) for n in mask.sum(dim=1).tolist()]) if token_ids.size else \
            np.zeros(0, np.int64)
        global_doc = np.asarray(idx, np.int64)[text_of_row]
        for j, i in enumerate(idx):
            doc_tokens[i] = batch["input_ids"][j][mask[j]].tolist()
        n_tokens += token_ids.size
        acc.add(global_doc[rows], pos_of_row[rows], token_ids[rows], latent, value)
        if progress:
            progress(len(idx))
    keys, counts, peaks = acc.token_table()
    names = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    latent_of, token_of = keys // vocab_size, keys % vocab_size
    entries: list[dict] = [{"id": j, "dead": True} for j in range(d_sae)]
    bounds = np.searchsorted(latent_of, np.arange(d_sae + 1))
    best_lat, best_val, best_doc, best_pos = acc.best if acc.best is not None else (np.zeros(0, np.int64),) * 4
    ctx_bounds = np.searchsorted(best_lat, np.arange(d_sae + 1))
    for j in range(d_sae):
        lo, hi = bounds[j], bounds[j + 1]
        if lo == hi:
            continue
        toks = [(names[t], round(float(p), 3), int(c)) for t, p, c in
                zip(token_of[lo:hi], peaks[lo:hi], counts[lo:hi])]
        toks.sort(key=lambda e: (-e[1], -e[2], e[0]))
        toks = toks[:top_tokens]
        ctxs = []
        for k in range(ctx_bounds[j], ctx_bounds[j + 1]):
            pieces = tokenizer.convert_ids_to_tokens(doc_tokens[int(best_doc[k])])
            ctxs.append(context(pieces, int(best_pos[k]), window))
        entries[j] = {"id": j, "label": short_label(toks), "fires": int(acc.fires[j]), "docs": int(acc.docs[j]),
                      "tokens": [list(t) for t in toks], "contexts": ctxs}
    info = encoder.info()
    alive = sum(1 for e in entries if not e.get("dead"))
    header = {"format": FORMAT, "model": info["model"], "sae": info["sae"], "sae_id": info.get("sae_id"),
              **identity(info), "prefix": info["prefix"],
              "sample": {"texts": len(texts), "tokens": int(n_tokens), "max_length": encoder.settings.max_length},
              "alive": alive, "dead": d_sae - alive}
    return LatentLabels(header, entries)


def write_labels(labels: LatentLabels, path: str | Path) -> Path:
    """One latent per line, keys in a fixed order: small diffs, byte-identical reruns."""
    from ..io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as out:
        out.write("{\n")
        for key, value in labels.header.items():
            out.write(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False, sort_keys=True)},\n")
        out.write('"latents": [\n')
        out.write(",\n".join(json.dumps(e, ensure_ascii=False) for e in labels.latents))
        out.write("\n]}\n")
    labels.path = path
    return path
