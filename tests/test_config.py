"""The config idiom: one dataclass per command, its CLI generated from it, validated before any work."""
from dataclasses import dataclass, field

import pytest

from splare_pyserini.config import build_parser, check_fields, option, parse_config, require
from splare_pyserini.errors import InputError
from splare_pyserini.model.settings import EncoderSettings


@dataclass(frozen=True)
class Inner:
    width: int = option(8, "how wide")
    mode: str = option("a", "which mode", choices=("a", "b"))

    def __post_init__(self):
        check_fields(self)
        require(self.width >= 1, f"width: must be >= 1, got {self.width}")


@dataclass(frozen=True)
class Outer:
    output: str = option(help="where")
    layer: int | None = option(None, "a layer")
    names: tuple[str, ...] = option(("x",), "some names")
    base: tuple[int, int, int] = option((6, 8192, 32), "three numbers")
    fast: bool = option(False, "go fast")
    inner: Inner = field(default_factory=Inner)


def test_flags_types_defaults_and_nesting():
    cfg = parse_config(Outer, ["--output", "o", "--layer", "3", "--names", "p", "q", "--base", "4", "16", "2",
                               "--fast", "--width", "5", "--mode", "b"], "prog")
    assert cfg == Outer("o", 3, ("p", "q"), (4, 16, 2), True, Inner(5, "b"))
    assert parse_config(Outer, ["--output", "o"], "prog") == Outer("o")
    assert parse_config(Outer, ["--output", "o", "--layer", "none"], "prog").layer is None
    assert "--no-fast" in build_parser(Outer, "prog").format_help()


def test_a_config_round_trips_through_its_command_line():
    from splare_pyserini.config import config_to_argv
    from splare_pyserini.train import TrainConfig

    for cfg in (Outer("o", 3, ("p", "q"), (4, 16, 2), True, Inner(5, "b")), Outer("o", names=())):
        assert parse_config(Outer, config_to_argv(cfg), "prog") == cfg
    train = TrainConfig(sources=("scifact:train", "cacm:corpus=0.5"), distill="kl", layer=None, fp16=False)
    assert parse_config(TrainConfig, config_to_argv(train), "prog") == train


def test_validation_is_the_same_for_api_and_cli(capsys):
    with pytest.raises(InputError, match=r"mode: 'c' is not one of a, b"):
        Inner(mode="c")
    with pytest.raises(InputError, match=r"width: must be >= 1, got 0"):
        parse_config(Outer, ["--output", "o", "--width", "0"], "prog")
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Outer, [], "prog")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: the following arguments are required: --output (see prog --help)\n"


def test_encoder_settings_refuse_bad_values_before_loading():
    for bad, message in [({"pooling": "mean"}, "pooling: 'mean'"), ({"dtype": "float64"}, "dtype: 'float64'"),
                         ({"sae_dtype": "float16"}, "sae_dtype: 'float16'"), ({"layer": 0}, "layer: must be >= 1"),
                         ({"query_topk": -1}, "query_topk: must be >= 0"), ({"prefix": "L "}, "prefix: must be")]:
        with pytest.raises(InputError, match=message):
            EncoderSettings(**bad)


@pytest.mark.parametrize("module,flags", [
    ("encode", "--input --output --kind --split --batch-size --shard-id --shard-num --chunk-size --device --model "
               "--sae --sae-id --layer --pooling --quant-scale --prefix --max-length --topk --query-max-length "
               "--query-topk --dtype --sae-dtype"),
    ("search", "--index --topics --output --hits --threads --batch-size --encoded-queries --bm25 --remove-query "
               "--model --sae --query-max-length"),
    ("beir", "--dataset --output --split --batch-size --chunk-size --hits --threads --batch-size-search --no-bm25 "
             "--model --sae --topk --query-topk"),
    ("index", "--input --index --bm25 --threads --overwrite"),
    ("evaluate", "--qrels --split --run --measures"),
])
def test_every_documented_flag_still_exists(module, flags):
    import importlib

    mod = importlib.import_module(f"splare_pyserini.{module}")
    config = {"encode": "EncodeConfig", "search": "SearchConfig", "beir": "BeirConfig", "index": "IndexConfig",
              "evaluate": "EvaluateConfig"}[module]
    text = build_parser(getattr(mod, config), "prog").format_help()
    missing = [flag for flag in flags.split() if flag not in text.replace("--[no-]", "--no-").split()
               and flag.replace("--no-", "--[no-]") not in text]
    assert not missing


def test_importing_the_encoders_starts_no_jvm():
    """The encoder, the query encoder and the package's top level import without booting Java."""
    import subprocess
    import sys

    code = ("import sys, jnius_config; import splare_pyserini as s; s.SaeSparseEncoder; s.SaeQueryEncoder; "
            "s.SaeDocumentEncoder; import splare_pyserini.encode, splare_pyserini.beir, splare_pyserini.search; "
            "print(jnius_config.vm_running, 'jnius' in sys.modules, 'pyserini' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


@pytest.mark.parametrize("module,config", [
    ("encode", "EncodeConfig"), ("search", "SearchConfig"), ("beir", "BeirConfig"), ("index", "IndexConfig"),
    ("evaluate", "EvaluateConfig"), ("train", "TrainConfig"), ("train_sae", "TrainSaeConfig"),
    ("sae_sweep", "SweepConfig"), ("bench", "BenchConfig"), ("generalize", "GeneralizeConfig"),
    ("explain", "ExplainConfig"), ("label_latents", "LabelConfig"), ("bench.prune", "PruneConfig"),
])
def test_every_command_builds_its_cli_from_its_config(module, config):
    """A nested config whose flag collides with its parent's is caught here, not by a user's --help."""
    import importlib

    cls = getattr(importlib.import_module(f"splare_pyserini.{module}"), config)
    assert "--help" in build_parser(cls, module).format_help()
