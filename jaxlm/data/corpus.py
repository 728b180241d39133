"""The offline default corpus `stdlib_docs` as a real TFDS builder, and what corpora share
(the hash split, offline preparation); the user's own files are `text_files.py`.

Importing this module registers the builder, so `tfds.builder('stdlib_docs', data_dir=...)` works.
Nothing is downloaded: the corpus is read from the running interpreter's standard library.

`stdlib_docs` (features `text`, `module`), about 11,400 documents and 2.5 MB on Python 3.11:
  * docstrings (module, class, function, method) of the pure-Python standard library, read with
    `ast` from the source files, never by importing them, so no module code runs (~1.35 MB);
  * prose comment blocks of the same files (~0.7 MB; config `docs_and_comments`, the default;
    config `docs` leaves them out);
  * the pydoc topics (`pydoc_data.topics.topics`, the language reference, ~0.47 MB).
  `module` is the top-level stdlib module a text belongs to ('asyncio', 'json', ...; 'pydoc_data'
  for the topics), usable later as a classification label. Left out: packages that Linux
  distributions split off or that are not prose (`test`, `idlelib`, `tkinter`, `turtle`,
  `turtledemo`, `lib2to3`, `distutils`, `ensurepip`, `antigravity`, `this`, `__main__`, any
  `test`/`tests`/`idle_test` folder), C extension modules (no source), texts shorter than
  `MIN_CHARS`, comment blocks that look like code, and exact duplicates (the first in key order
  is kept: the `encodings` boilerplate, repeated `Return self==value.`, ...). The content is a
  pure function of the Python version: files, nodes and topics are sorted, and document keys are
  `relpath:line:kind:qualname`. (The stdlib holds no more English prose than this: C modules'
  docstrings would add ~0.2 MB but differ between platforms.)

Splits: a document goes to 'validation' when the hash of its key falls in the first
`validation_fraction` (5%) of the hash range, else to 'train'. Every document is in exactly one
split, and where a document goes does not depend on the others. (`text_files` only: if hashing
leaves a split empty, the document with the lowest / highest hash is moved there.)
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import hashlib
import logging
import os
import re
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds

from jaxlm.data.records import add_array_record_files
from jaxlm.data.tfcompat import import_tf

import_tf()  # hide the accelerators from TensorFlow before tfds can initialize them

logger = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.05
MIN_CHARS = 20  # shorter docstrings / comments are skipped
TRAIN, VALIDATION = "train", "validation"

# Top-level stdlib names never read: split off by Linux distributions (so the corpus would differ
# between machines), GUI / demo code, easter eggs, tests, or handled separately (pydoc_data).
EXCLUDED_MODULES = frozenset(
    {
        "__main__",
        "antigravity",
        "distutils",
        "ensurepip",
        "idlelib",
        "lib2to3",
        "pydoc_data",
        "test",
        "this",
        "tkinter",
        "turtle",
        "turtledemo",
    }
)
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages"})


def split_of(key: str, validation_fraction: float = VALIDATION_FRACTION) -> str:
    """'validation' or 'train' for a document key: a stable hash, independent of other documents."""
    return VALIDATION if unit_hash(key) < validation_fraction else TRAIN


def unit_hash(key: str) -> float:
    """A stable hash of a document key in [0, 1)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# --------------------------------------------------------------------------------------------------
# Standard-library documents
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Document:
    key: str
    text: str
    module: str


def _stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def _stdlib_sources(stdlib_dir: str) -> list[tuple[str, str]]:
    """Sorted (relative posix path, top-level module) of the stdlib .py files that are read."""
    out = []
    for name in sorted(sys.stdlib_module_names):
        if name in EXCLUDED_MODULES or (name.startswith("__") and name != "__future__"):
            continue
        path = os.path.join(stdlib_dir, name)
        if os.path.isfile(path + ".py"):
            out.append((name + ".py", name))
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
                for f in sorted(files):
                    if f.endswith(".py"):
                        rel = os.path.relpath(os.path.join(root, f), stdlib_dir)
                        out.append((rel.replace(os.sep, "/"), name))
        # else: a C extension module (no source to read) or absent on this platform.
    return sorted(out)


_DOC_NODES = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODY_FIELDS = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})
_STRINGS = (ast.Constant, ast.JoinedStr)


def _scan(tree: ast.Module) -> tuple[list[tuple[int, str, str, str]], set[int]]:
    """Docstrings and the lines inside multi-line string literals, in one pass over the statements.

    Returns (sorted [(line, kind, qualname, docstring)] for the module and every class / function,
    set of line numbers that lie inside a string literal). Only multi-line expressions are walked
    in full, which keeps this fast.
    """
    found = []
    in_string: set[int] = set()
    doc = ast.get_docstring(tree, clean=True)
    if doc is not None:
        found.append((0, "module", "", doc))

    def strings(value: Any) -> None:
        for expr in value if isinstance(value, list) else [value]:
            if not isinstance(expr, ast.AST):
                continue
            end = getattr(expr, "end_lineno", None)  # None: no position (ast.arguments), walk it
            if end is None or end != expr.lineno:
                for node in ast.walk(expr):
                    if isinstance(node, _STRINGS) and node.end_lineno != node.lineno:
                        in_string.update(range(node.lineno + 1, node.end_lineno + 1))

    def visit(node: ast.AST, prefix: str) -> None:
        for field, value in ast.iter_fields(node):
            if field not in _BODY_FIELDS or not isinstance(value, list):
                strings(value)  # headers: decorators, arguments, tests, values of statements
                continue
            for child in value:
                if isinstance(child, _DOC_NODES):
                    qualname = prefix + child.name
                    doc = ast.get_docstring(child, clean=True)
                    if doc is not None:
                        kind = "class" if isinstance(child, ast.ClassDef) else "def"
                        found.append((child.lineno, kind, qualname, doc))
                    visit(child, qualname + ".")
                else:  # defs nested in if / try / with blocks keep the enclosing prefix
                    visit(child, prefix)

    visit(tree, "")
    found.sort(key=lambda t: (t[0], t[1], t[2]))
    return found, in_string


_PROSE_CHARS = re.compile(r"[A-Za-z0-9 .,;:'\"?!()\-]")
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import|return\b"
    r"|(if|for|while|elif|else|try|except|with)\b.*:$"
    r"|[\w.\[\]'\"]+\s*[-+*/|&]?=[^=]|[\w.]+\(.*\)\s*$|[{}\[\]()]+,?$)"
)


def _is_prose(text: str) -> bool:
    """Rough filter for comment blocks: mostly letters and punctuation, 6+ words, little code."""
    if len(text) < max(MIN_CHARS, 40) or len(text.split()) < 6:
        return False
    if len(_PROSE_CHARS.findall(text)) < 0.9 * len(text.replace("\n", "")):
        return False
    lines = [line for line in text.split("\n") if line.strip()]
    return sum(bool(_CODE_LINE.search(line)) for line in lines) <= len(lines) // 4


_RULER = re.compile(r"[-=*#~_+]{4,}")  # decoration like '# ------ section ------'


def _comment_blocks(source: bytes, in_string: set[int]) -> Iterator[tuple[int, str]]:
    """(first line, text) of blocks of full-line comments on consecutive lines.

    Lines inside multi-line string literals (`in_string`, from `_scan`) are not comments; this is
    exact for full-line comments and much faster than `tokenize`.
    """
    blocks: list[tuple[int, str]] = []
    block: list[str] = []
    start = last = -2
    for line_no, line in enumerate(source.decode("utf-8", "replace").splitlines(), start=1):
        stripped = line.lstrip()
        if not stripped.startswith("#") or line_no in in_string:
            continue
        directive = line_no <= 2 and stripped.startswith(("#!", "# -*-", "# vim:"))
        if directive or line_no != last + 1:
            if block:
                blocks.append((start, "\n".join(block).strip()))
            block, start = [], line_no
        if not directive:
            block.append(_RULER.sub("", stripped.lstrip("#")).strip())
        last = line_no
    if block:
        blocks.append((start, "\n".join(block).strip()))
    return iter(blocks)


def _pydoc_topics() -> dict[str, str]:
    # A plain data module (one dict literal); importing it runs no other code.
    from pydoc_data import topics

    return topics.topics


def stdlib_documents(
    include_comments: bool = True, stdlib_dir: str | None = None
) -> tuple[list[Document], dict[str, int]]:
    """All documents of the default corpus, in key order, and counts of what was skipped."""
    stdlib_dir = stdlib_dir or _stdlib_dir()
    stats: collections.Counter[str] = collections.Counter()
    docs: list[Document] = []
    seen: set[str] = set()

    def add(key: str, text: str, module: str, what: str) -> None:
        text = text.strip()
        if not text:
            stats[f"skipped_empty_{what}"] += 1
        elif len(text) < MIN_CHARS:
            stats[f"skipped_short_{what}"] += 1
        elif text in seen:
            stats[f"skipped_duplicate_{what}"] += 1
        else:
            seen.add(text)
            docs.append(Document(key, text, module))

    for rel, module in _stdlib_sources(stdlib_dir):
        with open(os.path.join(stdlib_dir, rel), "rb") as f:
            source = f.read()
        try:
            tree = ast.parse(source, filename=rel)
        except (SyntaxError, ValueError):
            stats["skipped_unparsable_files"] += 1
            continue
        stats["files"] += 1
        docstrings, in_string = _scan(tree)
        for line, kind, qualname, doc in docstrings:
            add(f"{rel}:{line}:{kind}:{qualname}", doc, module, "docstrings")
        if include_comments:
            for line, text in _comment_blocks(source, in_string):
                if _is_prose(text):
                    add(f"{rel}:{line}:comment:", text, module, "comments")
                else:
                    stats["skipped_nonprose_comments"] += 1
    for name, text in sorted(_pydoc_topics().items()):
        add(f"pydoc_data/topics:{name}", text, "pydoc_data", "topics")

    keys = [d.key for d in docs]
    if len(set(keys)) != len(keys):  # would be a bug in the key scheme
        dup = collections.Counter(keys).most_common(1)[0][0]
        raise RuntimeError(f"duplicate document key {dup!r}")
    stats["documents"] = len(docs)
    return docs, dict(sorted(stats.items()))


@dataclasses.dataclass(eq=False)
class StdlibDocsConfig(tfds.core.BuilderConfig):
    include_comments: bool = True


class StdlibDocs(tfds.core.GeneratorBasedBuilder):
    """Docstrings, prose comments and pydoc topics of the Python standard library (offline).

    See the module docstring of `jaxlm.data.corpus` for what is in it and how it is split.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        StdlibDocsConfig(
            name="docs_and_comments",
            include_comments=True,
            description="Docstrings, prose comment blocks and pydoc topics.",
        ),
        StdlibDocsConfig(
            name="docs", include_comments=False, description="Docstrings and pydoc topics only."
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "docs_and_comments"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "Docstrings, prose comments and pydoc topics of the Python "
                f"{sys.version_info.major}.{sys.version_info.minor} standard library."
            ),
            features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "module": tfds.features.Text()}
            ),
            supervised_keys=None,
            homepage="https://docs.python.org/3/library/",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing is downloaded
        start = time.time()
        docs, stats = stdlib_documents(include_comments=self.builder_config.include_comments)
        by_split: dict[str, list[Document]] = {TRAIN: [], VALIDATION: []}
        for doc in docs:
            by_split[split_of(doc.key)].append(doc)
        self.info.metadata["python_version"] = ".".join(map(str, sys.version_info[:3]))
        self.info.metadata["stats"] = stats
        logger.info(
            "stdlib_docs: %d documents (%.2f MB) from %d files in %.1fs; skipped %s",
            len(docs),
            sum(len(d.text.encode("utf-8")) for d in docs) / 1e6,
            stats.get("files", 0),
            time.time() - start,
            {k: v for k, v in stats.items() if k.startswith("skipped")},
        )
        return {split: self._generate_examples(items) for split, items in by_split.items()}

    def _generate_examples(self, docs: Sequence[Document]) -> Iterator[tuple[str, dict[str, str]]]:
        for doc in docs:
            yield doc.key, {"text": doc.text, "module": doc.module}


def prepare_default_corpus(
    data_dir: str, config: str = "docs_and_comments"
) -> tfds.core.DatasetBuilder:
    """The prepared `stdlib_docs` builder in `data_dir`: built on first use, then reused.

    Building reads the local standard library only (no download) and takes ~10 s.
    `config`: 'docs_and_comments' (default) or 'docs'.
    """
    builder = tfds.builder(f"stdlib_docs/{config}", data_dir=os.fspath(data_dir))
    prepare_builder(builder)
    built_with = builder.info.metadata.get("python_version") if builder.info.metadata else None
    current = ".".join(map(str, sys.version_info[:3]))
    if built_with and built_with.rsplit(".", 1)[0] != current.rsplit(".", 1)[0]:
        logger.warning(
            "stdlib_docs in %s was built with Python %s, this is Python %s: reusing it as is "
            "(delete the folder to rebuild)",
            builder.data_dir,
            built_with,
            current,
        )
    return builder


def prepare_builder(builder: tfds.core.DatasetBuilder) -> None:
    """Builds a generator-based builder offline (no download, no statistics), as TFRecord files
    (what `as_dataset` reads) and their ArrayRecord copy (what the pipeline reads by index, so a
    resume starts at its position: `records.add_array_record_files`)."""
    start = time.time()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
        )
    )
    add_array_record_files(builder)  # also for a folder prepared before the copy existed
    logger.info(
        "%s ready in %s (%.1fs)", builder.info.full_name, builder.data_dir, time.time() - start
    )


def iterate_texts(builder: tfds.core.DatasetBuilder, split: str = TRAIN) -> Iterable[str]:
    """Python strings of a prepared builder's split (e.g. to train a tokenizer)."""
    ds = builder.as_dataset(split=split, shuffle_files=False)
    for ex in tfds.as_numpy(ds):
        yield ex["text"].decode("utf-8")
