"""The config idiom: one dataclass per command, its CLI generated from it, validated before any work."""
import dataclasses
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path

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


def test_none_is_a_value_where_a_fields_choices_name_it():
    """``--saturation none`` asks for no saturation; elsewhere ``none`` unsets an optional field. (It once
    meant "unset", so the encoder fell back to the SAE's recorded saturation.)"""
    from splare_pyserini.beir import BeirConfig
    from splare_pyserini.config import config_to_argv
    from splare_pyserini.encode import EncodeConfig

    for cls, required in ((EncodeConfig, ["--input", "scifact", "--output", "o"]),
                          (BeirConfig, ["--dataset", "scifact", "--output", "o"])):
        cfg = parse_config(cls, [*required, "--saturation", "none"], "prog")
        assert cfg.encoder.saturation == "none"
        assert parse_config(cls, config_to_argv(cfg), "prog") == cfg
        unset = parse_config(cls, required, "prog")
        assert unset.encoder.saturation is None  # unset: the SAE's recorded one
        assert "--saturation" not in config_to_argv(unset) and parse_config(cls, config_to_argv(unset), "prog") == unset
    from splare_pyserini.train_sae import TrainSaeConfig  # generalize starts its SAEs' training from such an argv

    for saturation in (None, "none", "log1p"):
        sae_cfg = TrainSaeConfig(input=("scifact",), output="o", saturation=saturation)
        assert parse_config(TrainSaeConfig, config_to_argv(sae_cfg), "prog") == sae_cfg
    assert parse_config(Outer, ["--output", "o", "--layer", "none"], "prog").layer is None


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


COMMANDS = [
    ("encode", "EncodeConfig"), ("search", "SearchConfig"), ("beir", "BeirConfig"), ("index", "IndexConfig"),
    ("evaluate", "EvaluateConfig"), ("train", "TrainConfig"), ("train_sae", "TrainSaeConfig"),
    ("sae_sweep", "SweepConfig"), ("bench", "BenchConfig"), ("generalize", "GeneralizeConfig"),
    ("explain", "ExplainConfig"), ("label_latents", "LabelConfig"), ("bench.prune", "PruneConfig"),
    ("xquad", "XquadConfig"), ("models", "ModelsConfig"), ("bench.profile", "ProfileConfig"),
    ("bench.sae_training", "SaeTrainingBenchConfig"),
    ("adapt", "AdaptConfig"),
]


def command_config(module: str, config: str) -> type:
    return getattr(importlib.import_module(f"splare_pyserini.{module}"), config)


@pytest.mark.parametrize("module,config", COMMANDS)
def test_every_command_builds_its_cli_from_its_config(module, config):
    """A nested config whose flag collides with its parent's is caught here, not by a user's --help."""
    assert "--help" in build_parser(command_config(module, config), module).format_help()


def cli_fields(cls: type):
    """Every CLI field of a command's config, nested configs' included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from cli_fields(hints[f.name])
        elif f.init and f.metadata.get("cli", True):
            yield f


def flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def required_argv(cls: type) -> list[str]:
    """A placeholder for each required flag or argument, enough for argparse to reach the config's checks."""
    argv = []
    for f in cli_fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            argv += ["x"] if f.metadata.get("positional") else [flag(f), "x"]
    return argv


CHOICE_FIELDS = [(module, config, f.name) for module, config in COMMANDS
                 for f in cli_fields(command_config(module, config)) if f.metadata.get("choices")]


@pytest.mark.parametrize("module,config,name", CHOICE_FIELDS, ids=[f"{m}-{n}" for m, _, n in CHOICE_FIELDS])
def test_every_command_refuses_a_value_outside_a_fields_choices(module, config, name):
    """Every command's config checks its choices (nested configs' too) when the command line is parsed,
    before any model loads: one-line message naming the field and its choices."""
    cls = command_config(module, config)
    f = next(f for f in cli_fields(cls) if f.name == name)
    bad = ["bogus"] if f.metadata.get("positional") else [flag(f), "bogus"]
    choices = ", ".join(map(str, f.metadata["choices"]))
    with pytest.raises(InputError) as error:
        parse_config(cls, required_argv(cls) + bad, module)
    assert str(error.value) == f"{name}: 'bogus' is not one of {choices}"


def test_every_command_is_listed():
    """Each config a command parses is in COMMANDS, so the checks above reach a new command too."""
    import re

    package = Path(__file__).resolve().parent.parent / "splare_pyserini"
    parsed = {name for path in package.rglob("*.py") if path.name != "config.py"
              for name in re.findall(r"parse_config\((\w+),", path.read_text(encoding="utf-8"))}
    assert parsed == {config for _, config in COMMANDS}


def test_the_fields_that_went_unchecked_are_checked():
    """train_sae, sae_sweep and generalize once accepted any value of these (and trained on it)."""
    names = {(module, name) for module, _, name in CHOICE_FIELDS}
    assert {("train_sae", "architecture"), ("train_sae", "b_dec_init"), ("train_sae", "attention"),
            ("sae_sweep", "b_dec_init"), ("sae_sweep", "attention"), ("generalize", "negatives"),
            ("models", "action")} <= names


@pytest.mark.parametrize("module,config,argv,message", [
    ("search", "SearchConfig", ["--hits", "0"], "hits: must be >= 1, got 0"),
    ("search", "SearchConfig", ["--threads", "0"], "threads: must be >= 1, got 0"),
    ("search", "SearchConfig", ["--batch-size", "-1"], "batch_size: must be >= 1, got -1"),
    ("index", "IndexConfig", ["--threads", "0"], "threads: must be >= 1, got 0"),
    ("generalize", "GeneralizeConfig", ["--layer", "0"], "layer: must be >= 1, got 0"),
    ("beir", "BeirConfig", ["--hits", "0"], "hits: must be >= 1, got 0"),
    ("models", "ModelsConfig", ["list", "x"], "names: only fetch takes names, got ['x']"),
    ("models", "ModelsConfig", ["fetch"], "names: give the models to fetch"),
])
def test_counts_and_arguments_are_checked_when_parsed(module, config, argv, message):
    cls = command_config(module, config)
    with pytest.raises(InputError) as error:
        parse_config(cls, required_argv(cls) + argv, module)
    assert str(error.value) == message


def test_positional_arguments_parse_and_round_trip():
    from splare_pyserini.config import config_to_argv
    from splare_pyserini.models import ModelsConfig

    assert parse_config(ModelsConfig, [], "models") == ModelsConfig("list", ())
    fetch = parse_config(ModelsConfig, ["fetch", "a", "b"], "models")
    assert fetch == ModelsConfig("fetch", ("a", "b")) and config_to_argv(fetch) == ["fetch", "a", "b"]
    assert parse_config(ModelsConfig, config_to_argv(fetch), "models") == fetch


def test_the_model_settings_import_without_torch():
    """What the configs and the Lucene side read of the model (``model.settings``) does not load torch."""
    import subprocess
    import sys

    code = ("import sys, splare_pyserini.model.settings, splare_pyserini.model; "
            "print('torch' in sys.modules); splare_pyserini.model.SaeSparseEncoder; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_settings_diff_names_the_keys_both_sides_record_differently():
    from splare_pyserini.model.settings import settings_diff

    docs = {"model_hash": "m", "layer": 6, "pooling": "max", "attention": None, "topk": 400}
    assert settings_diff(docs, {**docs, "topk": 40}) == []  # a side's own setting, not a compatibility key
    assert settings_diff(docs, {**docs, "pooling": "sum", "layer": 4}) == ["layer", "pooling"]
    older = {k: v for k, v in docs.items() if k != "attention"}  # written before attention was recorded
    assert settings_diff(older, {**docs, "attention": "causal"}) == []
    # documents with fewer latents per token than the queries (token_k) are another vocabulary's use
    assert settings_diff({**docs, "token_k": 16}, {**docs, "token_k": None}) == ["token_k"]
