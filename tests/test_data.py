import pytest

from helpers import write_jsonl
from splare_pyserini.datasets import load_beir, read_jsonl, resolve_beir_folder
from splare_pyserini.errors import InputError


def test_beir_and_pyserini_jsonl_records(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "d1", "title": "T", "text": "body"},
                                             {"id": 7, "contents": "pyserini style"}])
    assert [(r.id, r.text) for r in read_jsonl(path)] == [("d1", "T body"), ("7", "pyserini style")]


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "ok"}, '{"_id": "b", "text": ', {"_id": "c"}])
    with pytest.raises(InputError, match=rf"{path}:2: malformed JSON"):
        read_jsonl(path)


def test_record_without_id_is_refused_with_line(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "ok"}, {"text": "no id here"}])
    with pytest.raises(InputError, match=rf"{path}:2: record has no id"):
        read_jsonl(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=rf"{path}:2: not valid UTF-8"):
        read_jsonl(path)


def test_duplicate_ids_are_skipped_and_counted(tmp_path):
    from splare_pyserini.datasets import ReadReport

    path = write_jsonl(tmp_path / "c.jsonl", [{"_id": "a", "text": "1"}, {"_id": "a", "text": "2"},
                                             {"_id": "b", "text": "3"}])
    report = ReadReport(str(path))
    assert [r.text for r in read_jsonl(path, report)] == ["1", "3"]
    assert report.skipped["duplicate ids"] == 1 and "skipped: 1 duplicate ids" in report.summary()


def test_shipped_scifact_matches_beir_statistics():
    ds = load_beir("scifact", "test")
    assert len(ds.corpus) == 5183 and len(ds.queries) == 300
    assert sum(len(d) for d in ds.qrels.values()) == 339


def test_beir_folder_without_qrels(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q", "text": "y"}])
    assert [q.id for q in load_beir(tmp_path).queries] == ["q"]  # all queries when unjudged
    with pytest.raises(InputError, match=r"qrels/test.tsv: no qrels for split 'test'"):
        load_beir(tmp_path, need_qrels=True)


def test_unknown_dataset_lists_known_ones(tmp_path):
    with pytest.raises(InputError, match=r"unknown dataset 'nope'.*scifact"):
        resolve_beir_folder("nope")


def test_unknown_ir_datasets_id_is_a_clear_error():
    from splare_pyserini.encode import load_input

    with pytest.raises(InputError, match=r"unknown ir_datasets id 'beir/no-such-set/test'"):
        load_input("beir/no-such-set/test", "auto", "test")
