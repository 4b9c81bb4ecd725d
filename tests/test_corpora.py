"""The WordNet-gloss corpus tool: exact records from ``data.<pos>`` lines, and errors that name the line."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "corpora" / "wordnet_glosses.py"
spec = importlib.util.spec_from_file_location("wordnet_glosses", TOOL)
wordnet_glosses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wordnet_glosses)

NOUN = ("00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 ~ 00023100 n 0000 | a general "
        "concept formed by extracting common features from specific examples  \n")
ADJ = ("00003356 00 a 02 emergent(a) 0 emerging 0 001 & 00003131 a 0000 | coming into existence; \"an emergent "
       "republic\"  \n")


def test_records_hold_lemmas_and_gloss() -> None:
    assert wordnet_glosses.parse_line(NOUN, "x") == (
        "wn-n-00002137", "abstraction, abstract entity: a general concept formed by extracting common features "
        "from specific examples")
    assert wordnet_glosses.parse_line(ADJ, "x") == (
        "wn-a-00003356", 'emergent, emerging: coming into existence; "an emergent republic"')
    assert wordnet_glosses.parse_line("  1 This software and database is being provided\n", "x") is None


def test_malformed_line_names_the_line() -> None:
    with pytest.raises(ValueError, match=r"data.noun:7: no ' \| '"):
        wordnet_glosses.parse_line("00002137 03 n 02 abstraction 0\n", "data.noun:7")
    with pytest.raises(ValueError, match="data.noun:8: malformed"):
        wordnet_glosses.parse_line("00002137 03 n zz | a gloss\n", "data.noun:8")


def test_folder_to_jsonl(tmp_path: Path) -> None:
    for part in wordnet_glosses.PARTS:
        (tmp_path / f"data.{part}").write_text("  1 license header\n" + (NOUN if part == "noun" else ""))
    out = tmp_path / "out" / "wordnet.jsonl"
    assert wordnet_glosses.main(["--wordnet", str(tmp_path), "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["_id"] for r in records] == ["wn-n-00002137"]
    (tmp_path / "data.verb").unlink()
    with pytest.raises(FileNotFoundError, match="data.verb"):
        wordnet_glosses.main(["--wordnet", str(tmp_path), "--output", str(tmp_path / "again.jsonl")])
    assert sorted(p.name for p in tmp_path.glob("again*")) == []
