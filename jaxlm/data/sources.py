"""Where a pipeline's text and vocabulary come from: the `data` config section, the prepared TFDS
builder (the offline default corpus is prepared on first use), its text feature, the vocabulary."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from jaxlm import io as jaxlm_io
from jaxlm.data.records import open_documents
from jaxlm.data.tfcompat import import_tf
from jaxlm.data.tokenizer import ByteVocabulary, Vocabulary, get_vocabulary
from jaxlm.objectives import PACKINGS

DEFAULT_CORPUS = "stdlib_docs"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The run config's `data` section."""

    dataset: str = DEFAULT_CORPUS  # TFDS name[/config][:version]: stdlib_docs, lm1b, c4/en:3.0.1
    data_dir: str | None = None  # TFDS data_dir; None: $TFDS_DATA_DIR or ~/tensorflow_datasets
    text_feature: str = "text"  # the string feature holding the document text
    train_split: str = "train"
    eval_split: str = "validation"
    seq_len: int = 512  # encoder / decoder-only length (decoder length per objective: layout.py)
    vocab: str = "byte"  # byte | sentencepiece (trained on train_split, cached) | path/to/x.model
    vocab_size: int | None = None  # sentencepiece: required (multiple of 128); byte: None or 384
    shuffle_buffer: int = 10_000  # documents per shuffle block; <= 1: no shuffle
    packing: str = "auto"  # auto (per objective, layout.py) | concat | greedy | none
    seed: int = 0  # shuffle order and objective randomness
    window: int = 512  # documents per tokenize / pack window (also the resume granularity)
    # Input shards: disjoint parts of the stream, each read by process_count / shards processes
    # that keep their own rows of its batches. 1: every process reads the whole stream, so runs
    # on any number of processes see identical batches; -1: one per process (disjoint reading,
    # what a pod needs). Must divide the process count.
    shards: int = 1

    @classmethod
    def coerce(cls, config: DataConfig | Mapping[str, Any] | Any) -> DataConfig:
        """A DataConfig from itself, a dict or an ml_collections ConfigDict section."""
        if isinstance(config, cls):
            return config
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(f"data.{unknown[0]} is not a data option; valid: {sorted(fields)}")
        return cls(**dict(config))

    def __post_init__(self) -> None:
        def bad(field: str, valid: str) -> ValueError:
            return ValueError(f"data.{field}={getattr(self, field)!r} is invalid: {valid}")

        if not isinstance(self.dataset, str) or not self.dataset:
            raise bad("dataset", "expected a TFDS dataset name")
        if not isinstance(self.seq_len, int) or self.seq_len < 8:
            raise bad("seq_len", "expected an int >= 8")
        for field in ("shuffle_buffer", "seed"):
            if not isinstance(getattr(self, field), int):
                raise bad(field, "expected an int")
        if not isinstance(self.shards, int) or not (self.shards == -1 or self.shards >= 1):
            raise bad("shards", "expected -1 (one per process) or a positive int")
        if not isinstance(self.window, int) or self.window < 1:
            raise bad("window", "expected an int >= 1")
        if self.packing not in ("auto", *PACKINGS):
            raise bad("packing", f"expected one of {['auto', *PACKINGS]}")

    @property
    def resolved_data_dir(self) -> str:
        d = self.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
        return jaxlm_io.join(d)  # a gs:// URI reaches TFDS unchanged


def load_builder(config: DataConfig) -> Any:
    """The prepared TFDS builder of `config.dataset`, with clear errors (see the module doc)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import registered

    from jaxlm.data import corpus  # registers stdlib_docs
    from jaxlm.data import text_files  # noqa: F401  (registers text_files)

    name, data_dir = config.dataset, config.resolved_data_dir
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except registered.DatasetNotFoundError:
        base = name.split(":")[0].split("/")[0]
        # list_imported_builders, not tfds.list_builders: the latter is slow and goes online.
        close = difflib.get_close_matches(base, registered.list_imported_builders(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"data.dataset={name!r}: unknown dataset, no TFDS builder {base!r} is registered{hint}"
        ) from None
    except (AssertionError, ValueError) as e:
        # The code cannot make that config / version (a text_files config, a version prepared by
        # another TFDS release): read it from its prepared folder if there is one.
        folder = _prepared_folder(data_dir, name)
        if folder is None:
            raise ValueError(f"data.dataset={name!r}: {e}") from None
        return tfds.builder_from_directory(folder)
    if builder.name == DEFAULT_CORPUS:  # prepared on first use; its ArrayRecord copy too
        return corpus.prepare_default_corpus(data_dir, config=builder.builder_config.name)
    if not builder.is_prepared():
        raise ValueError(
            f"data.dataset={name!r} is not prepared in data_dir={data_dir!r}. Prepare it once on "
            f"a machine with network access, `tfds build {name} --data_dir={data_dir}` or "
            f"`tfds.builder({name!r}, data_dir={data_dir!r}).download_and_prepare()`, and make "
            "that folder available here (c4 and wiki40b need Apache Beam to build)."
        )
    return builder


def _prepared_folder(data_dir: str, name: str) -> str | None:
    """data_dir/name[/config]/version (the newest version if none is named), if prepared."""
    path, _, version = name.partition(":")
    root = os.path.join(data_dir, *path.split("/"))
    if not os.path.isdir(root):
        return None
    versions = (
        [version]
        if version
        else sorted(
            (v for v in os.listdir(root) if v.replace(".", "").isdigit()),
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
    )
    for v in reversed(versions):
        if os.path.exists(os.path.join(root, v, "dataset_info.json")):
            return os.path.join(root, v)
    return None


def check_text_feature(builder: Any, feature: str) -> None:
    """A ValueError unless `feature` is a scalar string feature of the builder's dataset."""
    tf = import_tf()

    features = builder.info.features
    if feature not in features:
        raise ValueError(
            f"data.text_feature={feature!r} is not a feature of {builder.info.full_name}; "
            f"its features are {sorted(features.keys())}"
        )
    if features[feature].tf_dtype != tf.string or features[feature].shape != ():
        raise ValueError(
            f"data.text_feature={feature!r} of {builder.info.full_name} is not a text feature "
            f"({features[feature]!r})"
        )


def make_vocabulary(config: DataConfig, builder: Any = None) -> Vocabulary:
    """The vocabulary of `config.vocab` ('sentencepiece' trains on the train split once, cached
    in data_dir/vocab: on multi-host runs train it beforehand or pass a .model path)."""
    if config.vocab == "byte":
        if config.vocab_size not in (None, ByteVocabulary().vocab_size):
            raise ValueError(f"data.vocab_size={config.vocab_size!r}: the byte vocabulary has 384")
        return ByteVocabulary()
    if config.vocab == "sentencepiece":
        if config.vocab_size is None:
            raise ValueError("data.vocab_size is required with data.vocab='sentencepiece'")
        builder = builder if builder is not None else load_builder(config)
        return get_vocabulary(
            "sentencepiece",
            dataset_name=f"{builder.info.full_name}_{config.text_feature}_{config.train_split}",
            text_iterator_factory=lambda: _iterate_texts(builder, config),
            vocab_size=config.vocab_size,
            data_dir=config.resolved_data_dir,
        )
    kwargs = {} if config.vocab_size is None else {"vocab_size": config.vocab_size}
    return get_vocabulary(config.vocab, **kwargs)


def _iterate_texts(builder: Any, config: DataConfig) -> Iterator[str]:
    docs = open_documents(builder, config.train_split, config.text_feature)
    if docs is not None:  # by index: also for datasets prepared as ArrayRecord only
        for start in range(0, len(docs), 1024):
            for text in docs.read(range(start, min(start + 1024, len(docs)))):
                yield text.decode("utf-8", errors="replace")
        return
    ds = builder.as_dataset(split=config.train_split, shuffle_files=False)
    for text in ds.map(lambda ex: ex[config.text_feature]).as_numpy_iterator():
        yield text.decode("utf-8", errors="replace")
