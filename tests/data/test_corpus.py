"""Tests for jaxlm.data.corpus: the offline stdlib_docs TFDS corpus and the hash split."""

import collections
import os
import sys

import pytest
import tensorflow_datasets as tfds

from jaxlm.data import corpus

from ._util import read_examples


@pytest.fixture(scope="module")
def stdlib_corpus(corpus_dir):
    """The default corpus (built once per run, offline: tests/conftest.py) and its examples."""
    builder = tfds.builder("stdlib_docs", data_dir=corpus_dir)
    examples = {split: read_examples(builder, split) for split in ("train", "validation")}
    return corpus_dir, builder, examples


def test_stdlib_builder_registered_and_reused(stdlib_corpus):
    data_dir, builder, _ = stdlib_corpus
    assert builder.name == "stdlib_docs" and str(builder.version) == "1.0.0"
    assert set(builder.info.features.keys()) == {"text", "module"}
    info_file = os.path.join(builder.data_dir, "dataset_info.json")
    mtime = os.stat(info_file).st_mtime_ns
    again = corpus.prepare_default_corpus(str(data_dir))  # reused, not rebuilt
    assert os.stat(info_file).st_mtime_ns == mtime
    by_name = tfds.builder("stdlib_docs", data_dir=str(data_dir))
    assert by_name.is_prepared() and by_name.data_dir == again.data_dir
    assert by_name.info.splits["train"].num_examples == builder.info.splits["train"].num_examples
    assert by_name.info.metadata["python_version"].startswith(
        f"{sys.version_info[0]}.{sys.version_info[1]}."
    )
    downloads = os.path.join(str(data_dir), "downloads")
    assert not any(files for _, _, files in os.walk(downloads))  # nothing was downloaded


def test_stdlib_splits_disjoint_and_complete_and_deterministic(stdlib_corpus):
    _, builder, examples = stdlib_corpus
    train, val = examples["train"], examples["validation"]
    assert train and val
    assert len(val) / (len(train) + len(val)) == pytest.approx(0.05, abs=0.02)
    built = collections.Counter((e["text"], e["module"]) for e in train + val)
    assert not {e["text"] for e in train} & {e["text"] for e in val}
    # A second, independent extraction gives exactly the built documents: deterministic, and every
    # document is in exactly one split, the one its key hashes to.
    docs, stats = corpus.stdlib_documents()
    assert built == collections.Counter((d.text, d.module) for d in docs)
    assert max(built.values()) == 1  # duplicates were removed
    assert len({d.key for d in docs}) == len(docs)
    expected_val = {d.text for d in docs if corpus.split_of(d.key) == "validation"}
    assert expected_val == {e["text"] for e in val}
    assert stats["documents"] == len(docs) == builder.info.metadata["stats"]["documents"]
    assert stats["skipped_short_docstrings"] > 0


def test_stdlib_content(stdlib_corpus):
    _, _, examples = stdlib_corpus
    every = examples["train"] + examples["validation"]
    total_mb = sum(len(e["text"].encode("utf-8")) for e in every) / 1e6
    assert len(every) > 5000 and 1.5 < total_mb < 8, (len(every), total_mb)
    assert all(len(e["text"].strip()) >= corpus.MIN_CHARS for e in every)
    modules = collections.Counter(e["module"] for e in every)
    allowed = set(sys.stdlib_module_names)
    assert set(modules) <= allowed and len(modules) > 100
    assert modules["pydoc_data"] > 50 and modules["asyncio"] > 50
    assert not set(modules) & {
        "tkinter",
        "idlelib",
        "turtle",
        "this",
        "antigravity",
        "test",
        "lib2to3",
    }
    texts = {e["text"] for e in every}
    assert any(t.startswith("Shallow copy operation on arbitrary Python objects.") for t in texts)


def test_docstrings_and_comments_from_source():
    import ast

    src = b'''"""Module docstring, long enough."""
# -*- coding: utf-8 -*-
def f(x="""a
# not a comment: inside a string
"""):
    """Function docstring, long enough."""
    # A real comment in the body that is long enough and reads like prose.
    y = [
        1,  # trailing comments are left out
        # a comment inside a list literal is a comment too, and prose as well
    ]
    s = """
# not a comment either
"""
    class Inner:
        def g(self):
            """Method docstring of a nested class."""
'''
    docs, in_string = corpus._scan(ast.parse(src))
    assert [(line, kind, name) for line, kind, name, _ in docs] == [
        (0, "module", ""),
        (3, "def", "f"),
        (16, "def", "f.Inner.g"),  # Inner has no docstring
    ]
    blocks = list(corpus._comment_blocks(src, in_string))
    assert [line for line, _ in blocks] == [7, 10]
    assert blocks[0][1].startswith("A real comment") and all(corpus._is_prose(t) for _, t in blocks)
    assert not corpus._is_prose("x = compute(a, b)\nreturn x + 1 if x else None, more words")


def test_split_of_is_stable():
    keys = [f"doc{i}" for i in range(4000)]
    splits = [corpus.split_of(k) for k in keys]
    assert splits == [corpus.split_of(k) for k in keys]
    assert 0.03 < splits.count("validation") / len(keys) < 0.07
    assert corpus.split_of("json/__init__.py:0:module:") == corpus.split_of(
        "json/__init__.py:0:module:"
    )
    assert {corpus.split_of(k, 0.0) for k in keys} == {"train"}
    assert {corpus.split_of(k, 1.0) for k in keys} == {"validation"}
