"""Shared fixtures (session scope for the expensive objects); the builders live in ``helpers.py``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from helpers import build_tiny_bert, build_tiny_sae, make_beir_slice  # noqa: E402


@pytest.fixture(autouse=True)
def _unit_tests_boot_no_jvm(request):
    """The unit tier must stay fast and JVM-free: a test not marked integration that boots the JVM fails."""
    import sys

    before = "jnius_config" in sys.modules and sys.modules["jnius_config"].vm_running
    yield
    after = "jnius_config" in sys.modules and sys.modules["jnius_config"].vm_running
    if after and not before and request.node.get_closest_marker("integration") is None:
        pytest.fail("a unit-tier test booted the JVM: mark it @pytest.mark.integration")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_sae(tmp_path_factory, tiny_model) -> Path:
    return build_tiny_sae(tmp_path_factory.mktemp("tiny-sae"), model_name=str(tiny_model))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model, tiny_sae):
    from splare_pyserini.model.encoder import SaeSparseEncoder

    return SaeSparseEncoder(str(tiny_model), sae=str(tiny_sae), max_length=64)


@pytest.fixture(scope="session")
def scifact_slice(tmp_path_factory) -> Path:
    return make_beir_slice(tmp_path_factory.mktemp("beir") / "scifact-slice")
