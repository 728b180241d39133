"""The user's own text as a real TFDS builder, `text_files` (registered on import).

`text_files` (features `text`, `source`): `.txt` files (one document per blank-line separated
  paragraph block by default, so that even a single file splits into train and validation, or
  one per file with `txt_document='file'`) and `.jsonl` files (one document per line, from the
  `text_field` field). Undecodable bytes become U+FFFD; empty or whitespace-only documents,
  malformed JSON lines and records without a string text field are skipped, counted (in
  `info.metadata['stats']`) and logged.

Splits as in corpus.py: a document goes to 'validation' when the hash of its key falls in the first
`validation_fraction` of the hash range; if hashing leaves a split empty, the document with the
lowest / highest hash is moved there.
"""

from __future__ import annotations

import collections
import dataclasses
import glob as glob_lib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from jaxlm import io as jaxlm_io
from jaxlm.data.corpus import (
    TRAIN,
    VALIDATION,
    VALIDATION_FRACTION,
    prepare_builder,
    split_of,
    unit_hash,
)

logger = logging.getLogger(__name__)

TEXT_FILE_SUFFIXES = (".txt", ".jsonl")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
    """Which files, and how they become documents.

    paths: files, directories (searched recursively for .txt and .jsonl) or glob patterns.
    txt_document: 'paragraph' (blank-line separated blocks of a .txt file are documents) or 'file'.
    text_field: the field of a .jsonl record that holds the text.
    validation_fraction: share of the key-hash range that goes to 'validation'.
    """

    paths: tuple[str, ...] = ()
    txt_document: str = "paragraph"
    text_field: str = "text"
    validation_fraction: float = VALIDATION_FRACTION


def _local_path(p: str | os.PathLike) -> str:
    """`p` made absolute; a URI is refused by name rather than turned into `<cwd>/gs:/...`."""
    if jaxlm_io.is_uri(p):
        raise ValueError(f"text_files: {os.fspath(p)!r}: text files are read from local paths "
                         "(os.walk, glob, stat); copy them to the machine first (gsutil -m cp -r)")
    return jaxlm_io.join(p)


def resolve_text_files(paths: str | Sequence[str]) -> tuple[str, list[str]]:
    """(common root, sorted absolute files) for files, directories or glob patterns."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: set[str] = set()
    for p in map(_local_path, paths):
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.update(os.path.join(root, n) for n in names if n.endswith(TEXT_FILE_SUFFIXES))
        elif glob_lib.has_magic(p):
            matched = [m for m in glob_lib.glob(p, recursive=True) if os.path.isfile(m)]
            bad = [m for m in matched if not m.endswith(TEXT_FILE_SUFFIXES)]
            if bad:
                raise ValueError(
                    f"text_files: unsupported file {bad[0]!r}: use {TEXT_FILE_SUFFIXES}"
                )
            files.update(matched)
        elif os.path.isfile(p):
            if not p.endswith(TEXT_FILE_SUFFIXES):
                raise ValueError(f"text_files: unsupported file {p!r}: use {TEXT_FILE_SUFFIXES}")
            files.add(p)
        else:
            raise ValueError(f"text_files: {p!r} is not a file, directory or matching glob")
    if not files:
        raise ValueError(f"text_files: no {TEXT_FILE_SUFFIXES} files under {list(paths)}")
    ordered = sorted(files)
    root = os.path.commonpath(ordered)
    if len(ordered) == 1 or os.path.isfile(root):
        root = os.path.dirname(root)
    return root, ordered


def text_file_documents(
    files: Sequence[str],
    root: str,
    *,
    txt_document: str = "paragraph",
    text_field: str = "text",
    stats: collections.Counter | None = None,
) -> Iterator[tuple[str, str, str]]:
    """(key, text, source) for every non-empty document of `files`; keys are relative to `root`."""
    if txt_document not in ("paragraph", "file"):
        raise ValueError(f"txt_document={txt_document!r}: must be 'paragraph' or 'file'")
    stats = stats if stats is not None else collections.Counter()
    for path in files:
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".jsonl"):
            for line_no, line in enumerate(raw.split(b"\n"), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8", errors="replace"))
                except json.JSONDecodeError:
                    stats["skipped_malformed_json"] += 1
                    continue
                text = record.get(text_field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats["skipped_missing_text_field"] += 1
                    continue
                if not text.strip():
                    stats["skipped_empty"] += 1
                    continue
                yield f"{rel}:{line_no}", text, rel
        else:
            text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
            if txt_document == "file":
                blocks = [text]
            else:
                blocks = _PARAGRAPH_BREAK.split(text)
            for i, block in enumerate(blocks):
                block = block.strip("\n") if txt_document == "paragraph" else block
                if not block.strip():
                    stats["skipped_empty"] += 1
                    continue
                yield f"{rel}:{i}", block, rel


class TextFiles(tfds.core.GeneratorBasedBuilder):
    """The user's `.txt` / `.jsonl` files; pass `config=TextFilesConfig(name=..., paths=[...])`.

    Prefer `text_files_builder(paths, data_dir=...)`, which names the config after the files.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Documents from local .txt / .jsonl files.",
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "source": tfds.features.Text()}
            ),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing is downloaded
        config = self.builder_config
        if not isinstance(config, TextFilesConfig) or not config.paths:
            raise ValueError(
                "text_files needs config=TextFilesConfig(name=..., paths=[...]) "
                "(or use jaxlm.data.text_files.text_files_builder)"
            )
        root, files = resolve_text_files(config.paths)
        options = dict(txt_document=config.txt_document, text_field=config.text_field)
        # First pass: hashes only (the texts are not kept), to make sure neither split is empty.
        stats: collections.Counter[str] = collections.Counter()
        counts: collections.Counter[str] = collections.Counter()
        lowest, highest = (2.0, ""), (-1.0, "")
        for key, _, _ in text_file_documents(files, root, stats=stats, **options):
            u = unit_hash(key)
            counts[VALIDATION if u < config.validation_fraction else TRAIN] += 1
            lowest, highest = min(lowest, (u, key)), max(highest, (u, key))
        total = counts[TRAIN] + counts[VALIDATION]
        if total < 2:
            raise ValueError(
                f"text_files: {total} non-empty document(s) in {files}; need at least 2 "
                "(one per split)"
            )
        forced = {}  # deterministic fix-up of a split that hashing left empty
        if counts[VALIDATION] == 0:
            forced[lowest[1]] = VALIDATION
        if counts[TRAIN] == 0:
            forced[highest[1]] = TRAIN
        logger.info(
            "text_files: %d documents from %d files (train %d, validation %d%s); skipped %s",
            total,
            len(files),
            counts[TRAIN],
            counts[VALIDATION],
            f", moved {forced}" if forced else "",
            dict(stats),
        )
        self.info.metadata["stats"] = dict(sorted(stats.items()))
        self.info.metadata["files"] = len(files)
        return {
            split: self._generate_examples(split, files, root, options, forced)
            for split in (TRAIN, VALIDATION)
        }

    def _generate_examples(
        self,
        split: str,
        files: list[str],
        root: str,
        options: dict[str, str],
        forced: dict[str, str],
    ) -> Iterator[tuple[str, dict[str, str]]]:
        fraction = self.builder_config.validation_fraction
        for key, text, source in text_file_documents(files, root, **options):
            if forced.get(key, split_of(key, fraction)) == split:
                yield key, {"text": text, "source": source}


def text_files_builder(
    paths: str | Sequence[str],
    *,
    data_dir: str,
    name: str | None = None,
    prepare: bool = True,
    **options: Any,
) -> tfds.core.DatasetBuilder:
    """A (prepared) `text_files` builder for `paths`, cached in `data_dir/text_files/<name>/1.0.0`.

    `name` defaults to 'files_<hash>' of the resolved file list (paths, sizes, mtimes) and the
    options,
    so changed files get a fresh build; pass a fixed name to always reuse what was built.
    `options`: `txt_document`, `text_field`, `validation_fraction` (see `TextFilesConfig`).
    """
    paths = (paths,) if isinstance(paths, (str, os.PathLike)) else tuple(paths)
    paths = tuple(map(_local_path, paths))
    if name is None:
        _, files = resolve_text_files(paths)
        h = hashlib.sha256()
        for f in files:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(json.dumps(options, sort_keys=True).encode())
        name = "files_" + h.hexdigest()[:12]
    config = TextFilesConfig(name=name, paths=paths, **options)
    builder = tfds.builder("text_files", config=config, data_dir=os.fspath(data_dir))
    if prepare:
        prepare_builder(builder)
    return builder
