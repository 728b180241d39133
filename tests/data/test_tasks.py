"""Downstream tasks: the offline stdlib_modules task and GLUE through tfds mock data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxlm.data import corpus
from jaxlm.data.tasks import (STDLIB_CLASSES, TaskNotPreparedError, _fit, _stdlib_docs,
                              encode_texts, load_task)
from jaxlm.data.tokenizer import EOS_ID, PAD_ID, ByteVocabulary

SEQ_LEN = 64


@pytest.fixture(scope="module")
def task():
    return load_task("stdlib_modules", vocab=ByteVocabulary(), seq_len=SEQ_LEN)


def check_rows(tokens: np.ndarray, parts: int = 1) -> None:
    """Every row: `ids EOS` per part, then only padding."""
    for row in tokens:
        eos = np.flatnonzero(row == EOS_ID)
        assert len(eos) == parts, row
        assert (row[:eos[-1]] != PAD_ID).all() and (row[eos[-1] + 1:] == PAD_ID).all(), row


def test_stdlib_task_is_deterministic_disjoint_and_held_out(task):
    again = load_task("stdlib_modules", vocab="byte", seq_len=SEQ_LEN)
    for a, b in ((task.train, again.train), (task.eval, again.eval)):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.keys == b.keys
    assert not set(task.train.keys) & set(task.eval.keys)
    # The eval split is the pretraining corpus's validation split: never pretrained on.
    assert {corpus.split_of(k) for k in task.eval.keys} == {corpus.VALIDATION}
    assert {corpus.split_of(k) for k in task.train.keys} == {corpus.TRAIN}
    assert task.eval_split == "validation"


def test_stdlib_task_classes_sizes_and_baseline(task):
    assert task.label_names == STDLIB_CLASSES and task.num_classes == 10
    train_counts = np.bincount(task.train.labels, minlength=10)
    eval_counts = np.bincount(task.eval.labels, minlength=10)
    assert (train_counts >= 100).all() and (eval_counts >= 3).all()
    assert len(task.train) > 3000 and len(task.eval) > 150
    assert task.majority_accuracy == pytest.approx(eval_counts.max() / eval_counts.sum())
    assert task.majority_accuracy < 0.25 and train_counts.max() / train_counts.sum() < 0.2
    for split in (task.train, task.eval):
        assert split.tokens.shape == (len(split), SEQ_LEN) and split.tokens.dtype == np.int32
        assert split.labels.dtype == np.int32
        check_rows(split.tokens)
    assert 0 < task.truncated_fraction < 1
    # The text is the start of the document: decode a row and find it in the source text.
    docs = {d.key: d.text for d in _stdlib_docs()[:2000]}
    key = next(k for k in task.train.keys if k in docs)
    row = task.train.tokens[task.train.keys.index(key)]
    assert docs[key].encode().startswith(ByteVocabulary().decode(row).encode()[:SEQ_LEN - 4])


def test_pair_encoding_truncates_the_longer_part_first():
    vocab = ByteVocabulary()
    tokens, cut = encode_texts(vocab, [("a" * 100, "b" * 5), ("xy", "z")], seq_len=20)
    check_rows(tokens, parts=2)
    assert cut == 1
    assert vocab.decode(tokens[0]) == "a" * 13 + "b" * 5
    assert vocab.decode(tokens[1]) == "xyz"
    assert _fit([30, 30], 21) == [11, 10] and _fit([3, 4], 10) == [3, 4]


def test_glue_pairs_from_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        task = load_task("glue/mnli", vocab="byte", seq_len=48, data_dir=str(tmp_path))
    assert task.label_names == ("entailment", "neutral", "contradiction")
    assert task.eval_split == "validation_matched"
    assert task.train.tokens.shape == task.eval.tokens.shape == (12, 48)
    check_rows(task.train.tokens, parts=2)  # premise EOS hypothesis EOS
    assert set(task.train.labels) <= {0, 1, 2}
    with tfds.testing.mock_data(num_examples=5):
        sst2 = load_task("glue/sst2", vocab="byte", seq_len=32, data_dir=str(tmp_path))
    check_rows(sst2.eval.tokens, parts=1)
    assert sst2.num_classes == 2 and len(sst2.eval) == 5


def test_unprepared_glue_and_unknown_tasks_fail_clearly(tmp_path):
    with pytest.raises(TaskNotPreparedError, match="not prepared in .*download_and_prepare"):
        load_task("glue/cola", vocab="byte", seq_len=32, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        load_task("nope", vocab="byte", seq_len=32)
    with pytest.raises(ValueError, match="regression"):
        load_task("glue/stsb", vocab="byte", seq_len=32, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="seq_len"):
        load_task("stdlib_modules", vocab="byte", seq_len=1)
