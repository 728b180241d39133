"""Shared pieces of the pipeline tests: a tiny offline dataset with empty / whitespace /
undecodable texts (registered with TFDS on import), and small helpers. Byte vocabulary, seq_len 64.
"""

import numpy as np
import tensorflow_datasets as tfds

from jaxlm import objectives as O
from jaxlm.data.pipeline import DataConfig, Pipeline
from jaxlm.data.tokenizer import ByteVocabulary

SEQ = 64
BYTE = ByteVocabulary()

TINY_TRAIN = [
    b"",
    b"   \n\t  ",
    "\u3000\u00a0 \u2028".encode(),
    b"caf\xe9 with a stray \xff byte, kept as bytes.",
    b"a short document.",
    b"The quick brown fox jumps over the lazy dog. " * 4,  # 180 bytes: several sequences
    b"another line of text here",
    b"x",
    b"tokens are not lost when documents are packed together",
    b"last one",
]
TINY_VALIDATION = [b"validation document number one", b"two", b"   ", b"and a third, longer one..."]


class PipelineTestTexts(tfds.core.GeneratorBasedBuilder):  # registered as pipeline_test_texts
    """Tiny offline dataset for these tests: features text, title, id."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "title": tfds.features.Text(), "id": np.int64}
            )
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(TINY_TRAIN),
            "validation": self._generate_examples(TINY_VALIDATION),
        }

    def _generate_examples(self, docs):
        for i, text in enumerate(docs):
            yield i, {"text": text, "title": f"t{i}", "id": i}


def read_examples(builder, split):
    """Every example of a prepared builder's split, its strings decoded."""
    return [
        {k: v.decode("utf-8") for k, v in ex.items()}
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    ]


def texts(data_dir, dataset, split):
    builder = tfds.builder(dataset, data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False).map(lambda ex: ex["text"])
    return list(ds.as_numpy_iterator())


def is_empty(text: bytes) -> bool:
    return not text.decode("utf-8", "replace").strip()


def stream(docs):
    """Byte-vocabulary tokens of the non-empty documents, each followed by EOS."""
    out = []
    for t in docs:
        if not is_empty(t):
            out += [b + ByteVocabulary.BYTE_OFFSET for b in t] + [O.EOS_ID]
    return np.array(out, np.int32)


def pipe(data_dir, objective="clm", family="decoder", batch=4, **data):
    data = {"data_dir": data_dir, "seq_len": SEQ, "shuffle_buffer": 256, "window": 32, **data}
    return Pipeline(
        DataConfig(**data),
        objective=objective,
        family=family,
        global_batch_size=batch,
        process_index=0,
        process_count=1,
    )


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


SAMPLES = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew lines\n\n  indented code:\n    x = f(1, 2)",
    "non-ASCII: héllo wörld, naïve café, 中文, emoji 🙂, Ελληνικά",
    "",
    "digits 1234567890 and symbols ~!@#$%^&*()_+{}|:<>?",
]


def english_texts(max_chars=300_000):
    """Deterministic English from the interpreter itself (the pydoc topics), no download."""
    from pydoc_data.topics import topics

    texts, n = [], 0
    for _, text in sorted(topics.items()):
        texts.append(text)
        n += len(text)
        if n >= max_chars:
            break
    return texts
