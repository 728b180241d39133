"""Tests for jaxlm.data.text_files: the text_files TFDS builder over the user's own files."""

import json

import pytest

from jaxlm.data.text_files import text_files_builder

from ._util import read_examples


@pytest.fixture
def user_files(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    paragraphs = [f"Paragraph number {i} of the first file.\nIt has two lines." for i in range(30)]
    raw = "\n\n".join(paragraphs).encode() + b"\n\n   \n\t\n\nBad bytes here: \xff\xfe end.\n"
    (src / "a.txt").write_bytes(raw)
    (src / "sub" / "b.txt").write_text("Only paragraph of b, caf\u00e9.\r\n")
    records = [{"text": f"JSON document {i}."} for i in range(20)]
    lines = [json.dumps(r) for r in records]
    lines += [json.dumps({"text": "   "}), "{not json", json.dumps({"body": "no text field"}), ""]
    (src / "c.jsonl").write_bytes(
        ("\n".join(lines) + "\n").encode() + b'{"text": "bytes \xff in json"}\n'
    )
    (src / "ignored.csv").write_text("a,b\n")
    expected = set(paragraphs) | {
        "Bad bytes here: \ufffd\ufffd end.",
        "Only paragraph of b, caf\u00e9.",
    }
    expected |= {r["text"] for r in records} | {"bytes \ufffd in json"}
    return src, expected


def test_text_files_builder(user_files, tmp_path, no_network):
    src, expected = user_files
    builder = text_files_builder(
        str(src), data_dir=str(tmp_path / "tfds"), validation_fraction=0.2
    )
    assert builder.name == "text_files" and builder.builder_config.name.startswith("files_")
    train, val = read_examples(builder, "train"), read_examples(builder, "validation")
    assert train and val
    texts = [e["text"] for e in train + val]
    assert sorted(texts) == sorted(expected)  # each document once, in exactly one split
    assert {e["source"] for e in train + val} == {"a.txt", "sub/b.txt", "c.jsonl"}
    stats = builder.info.metadata["stats"]
    assert stats == {
        "skipped_empty": 2,
        "skipped_malformed_json": 1,
        "skipped_missing_text_field": 1,
    }
    # same files and options -> same config name -> reused
    again = text_files_builder(
        str(src), data_dir=str(tmp_path / "tfds"), validation_fraction=0.2
    )
    assert again.data_dir == builder.data_dir


def test_text_files_per_file_and_glob(user_files, tmp_path):
    src, _ = user_files
    builder = text_files_builder(
        str(src / "**" / "*.txt"), data_dir=str(tmp_path / "tfds"), txt_document="file"
    )
    docs = read_examples(builder, "train") + read_examples(builder, "validation")
    assert sorted(e["source"] for e in docs) == ["a.txt", "sub/b.txt"]  # one document per file
    assert any("Paragraph number 29" in e["text"] and "\ufffd" in e["text"] for e in docs)


def test_text_files_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no"):
        text_files_builder(str(tmp_path / "empty"), data_dir=str(tmp_path / "tfds"))
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "x.txt").write_text("A single document only.")
    with pytest.raises(ValueError, match="at least 2"):
        text_files_builder(str(tmp_path / "one"), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "x.csv").write_text("a")
        text_files_builder(str(tmp_path / "x.csv"), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="not a file"):
        text_files_builder(str(tmp_path / "missing"), data_dir=str(tmp_path / "tfds"))


def test_text_files_small_corpus_gets_both_splits(tmp_path):
    src = tmp_path / "two"
    src.mkdir()
    (src / "t.txt").write_text("First document.\n\nSecond document.\n\nThird document.")
    builder = text_files_builder(str(src), data_dir=str(tmp_path / "tfds"))
    train, val = read_examples(builder, "train"), read_examples(builder, "validation")
    assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == 3
