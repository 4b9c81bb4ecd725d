"""Load sparse autoencoders with sae-lens's own API and read what they record."""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ArtifactError

PACKAGED_MODELS = Path(__file__).parent / "models"
DEFAULT_SAE = str(PACKAGED_MODELS / "minilm-l6-layer6-topk-sae")

# hook names sae-lens SAEs record, and the Hugging Face hidden_states index each one is.
_HOOK_PATTERNS = [
    (re.compile(r"blocks\.(\d+)\.hook_resid_post$"), 1),
    (re.compile(r"blocks\.(\d+)\.hook_resid_pre$"), 0),
    (re.compile(r"(?:^|\.)(?:layers|layer|h|block|blocks)\.(\d+)$"), 1),
]


def load_sae(spec: str, sae_id: str | None = None, device: str = "cpu"):
    """A local folder written by ``SAE.save_model`` or a sae-lens release + id; always float32."""
    from sae_lens import SAE

    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise ArtifactError(f"--sae {spec}: expected a folder saved by sae-lens (cfg.json + weights)")
        missing = [f for f in ("cfg.json", "sae_weights.safetensors") if not (path / f).is_file()]
        if missing:
            raise ArtifactError(f"--sae {spec}: missing {', '.join(missing)}")
        try:
            return SAE.load_from_disk(path, device=device, dtype="float32")
        except Exception as err:  # corrupt json or safetensors: name the folder and the cause
            raise ArtifactError(f"--sae {spec}: cannot load ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else 'corrupt file'})") from None
    if sae_id is None:
        raise ArtifactError(f"--sae {spec!r} is not a folder; for a sae-lens release also give --sae-id")
    try:
        return SAE.from_pretrained(spec, sae_id, device=device, dtype="float32")
    except Exception as err:
        raise ArtifactError(f"cannot load sae-lens release {spec!r} id {sae_id!r}: {str(err).splitlines()[0]}") from None


def recorded_layer(sae) -> int | None:
    """The hidden_states index the SAE was trained on, from its metadata hook name."""
    hook = sae.cfg.metadata.get("hook_name") if sae.cfg.metadata is not None else None
    if not hook:
        return None
    for pattern, offset in _HOOK_PATTERNS:
        match = pattern.search(hook)
        if match:
            return int(match.group(1)) + offset
    return None


def recorded_model(sae) -> str | None:
    return sae.cfg.metadata.get("model_name") if sae.cfg.metadata is not None else None
