"""The pipeline tests' data_dir: the shared default corpus beside the tiny pipeline_test_texts."""

import os

import pytest
import tensorflow_datasets as tfds

from jaxlm.data.tfcompat import import_tf

from ..conftest import forbid_network
from . import _util  # noqa: F401  (registers pipeline_test_texts with TFDS)


@pytest.fixture(scope="session")
def tf():
    return import_tf()


@pytest.fixture(scope="session")
def data_dir(corpus_dir, tmp_path_factory):
    """A data_dir of its own (tests write datasets into it), the default corpus linked in."""
    d = tmp_path_factory.mktemp("tfds")
    os.symlink(os.path.join(corpus_dir, "stdlib_docs"), d / "stdlib_docs")
    with pytest.MonkeyPatch.context() as mp:
        forbid_network(mp)
        tfds.builder("pipeline_test_texts", data_dir=str(d)).download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False
            )
        )
    return str(d)
