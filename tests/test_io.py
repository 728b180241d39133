"""jaxlm.io on local paths and on a Cloud Storage emulator (tests/gcs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import jax
import pytest

from jaxlm import io
from tests.gcs import upload


@pytest.fixture(params=["local", "gcs"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty directory: under tmp_path, or a fresh prefix in the emulator's bucket."""
    if request.param == "local":
        return str(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    return io.join(bucket, f"{request.node.name.replace('[', '-').rstrip(']')}")


def test_is_uri() -> None:
    assert io.is_uri("gs://b/x") and io.is_uri("s3://b") and io.is_uri("file:///tmp")
    assert not io.is_uri("runs/x") and not io.is_uri("/abs/gs://x") and not io.is_uri("gs:/b")


def test_path_keeps_uris_and_makes_local_paths_absolute(tmp_path, monkeypatch) -> None:
    assert str(io.path("gs://b/tfds")) == "gs://b/tfds"
    assert io.join("gs://b", "runs", "x/config.json") == "gs://b/runs/x/config.json"
    monkeypatch.chdir(tmp_path)
    assert io.join("runs", "x") == os.path.join(str(tmp_path), "runs", "x")
    assert io.join("~/d") == os.path.expanduser("~/d")


def test_write_read_list_glob_remove(root: str) -> None:
    run = io.makedirs(io.join(root, "run"))  # On Cloud Storage a no-op: no empty directories.
    io.write_text(io.join(root, "run", "config.json"), '{"a": 1}')
    io.write_bytes(io.join(root, "run", "ckpt", "blob.bin"), b"\x00\x01")  # Parents created.
    with io.open(io.join(root, "run", "notes.txt"), "w") as f:
        f.write("line\n")
    assert io.read_text(io.join(root, "run", "config.json")) == '{"a": 1}'
    assert io.read_bytes(io.join(root, "run", "ckpt", "blob.bin")) == b"\x00\x01"
    with io.open(io.join(root, "run", "notes.txt")) as f:
        assert f.read() == "line\n"
    # The atomic write leaves no temporary file behind.
    assert io.isdir(run) and io.listdir(run) == ["ckpt", "config.json", "notes.txt"]
    assert [p.name for p in io.glob(root, "run/*.json")] == ["config.json"]
    assert [str(p) for p in io.glob(run, "*/*.bin")] == [io.join(root, "run", "ckpt", "blob.bin")]
    io.write_text(io.join(root, "run", "config.json"), '{"a": 2}')  # Overwrite.
    assert io.read_text(io.join(root, "run", "config.json")) == '{"a": 2}'
    if io.is_uri(root):
        with pytest.raises(ValueError, match="cannot append"):
            io.open(io.join(root, "run", "notes.txt"), "a")
    else:
        with io.open(io.join(root, "run", "notes.txt"), "a") as f:
            f.write("more\n")
        assert io.read_text(io.join(root, "run", "notes.txt")) == "line\nmore\n"
    io.remove(io.join(root, "run", "notes.txt"))
    assert not io.exists(io.join(root, "run", "notes.txt"))
    io.remove(io.join(root, "run", "ckpt"), recursive=True)
    assert io.listdir(run) == ["config.json"]


def test_failed_local_write_keeps_the_old_file(tmp_path) -> None:
    target = io.write_text(tmp_path / "results.json", "old")
    with pytest.raises(TypeError):
        io.write_bytes(target, "not bytes")  # type: ignore[arg-type]
    assert io.read_text(target) == "old" and io.listdir(tmp_path) == ["results.json"]


def test_only_process_zero_writes_shared_files(root: str) -> None:
    target = io.join(root, "config.json")
    with pytest.raises(TimeoutError, match="config.json"):
        io.write_shared_text(target, "{}", timeout_s=0.05, poll_s=0.01, process_index=1)
    assert not io.exists(target)
    assert io.is_writer(0) and not io.is_writer(3) and io.is_writer() == (jax.process_index() == 0)

    waiter_result = []
    waiter = threading.Thread(target=lambda: waiter_result.append(
        io.write_shared_text(target, "ignored", timeout_s=60, poll_s=0.01, process_index=1)))
    waiter.start()
    io.write_shared_text(target, '{"from": 0}', process_index=0)
    waiter.join()
    assert [str(p) for p in waiter_result] == [target]
    assert io.read_text(target) == '{"from": 0}'


def test_a_file_written_by_another_process_becomes_visible(gcs_bucket, gcs_endpoint) -> None:
    # gcsfs would keep serving the listing made before the upload; jaxlm.io turns that cache off.
    run = io.join(gcs_bucket, "shared")
    io.write_text(io.join(run, "a.txt"), "a")
    assert io.listdir(run) == ["a.txt"] and not io.exists(io.join(run, "b.txt"))
    upload(gcs_endpoint, io.join(run, "b.txt"), b"b")
    assert io.read_text(io.wait_for(io.join(run, "b.txt"), timeout_s=5, poll_s=0.01)) == "b"
    assert io.listdir(run) == ["a.txt", "b.txt"]


_ORBAX_ROUND_TRIP = """
import sys
import jax, jax.numpy as jnp, numpy as np, orbax.checkpoint as ocp
from jaxlm import io
tree = {"w": jnp.arange(8.0).reshape(2, 4), "b": {"count": jnp.ones((3,), jnp.int32)}}
directory = io.path(sys.argv[1])
with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2)) as m:
    for step in (1, 2, 3):  # Step 1 is deleted on the way: keep N works on gs:// too.
        m.save(step, args=ocp.args.StandardSave(jax.tree.map(lambda x: x * step, tree)))
    m.wait_until_finished()
# Orbax marks a finished step on gs:// with commit_success.txt (no atomic rename there).
assert io.listdir(directory) == ["2", "3"], io.listdir(directory)
assert io.exists(directory / "3" / "commit_success.txt")
# A step directory without the marker is an interrupted save, and Orbax must skip it.
io.write_text(directory / "4" / "default" / "_METADATA", "{}")
with ocp.CheckpointManager(directory) as m:
    assert m.all_steps() == [2, 3] and m.latest_step() == 3, m.all_steps()
    restored = m.restore(3, args=ocp.args.StandardRestore(jax.tree.map(np.zeros_like, tree)))
np.testing.assert_array_equal(restored["w"], 3 * np.arange(8.0).reshape(2, 4))
np.testing.assert_array_equal(restored["b"]["count"], np.full((3,), 3, np.int32))
print("round trip ok")
"""


def test_orbax_save_and_restore_on_gcs(gcs_bucket) -> None:
    # In a fresh process, as a run would start, and so a stuck save fails the test after a
    # timeout instead of blocking the session.
    result = subprocess.run(
        [sys.executable, "-c", _ORBAX_ROUND_TRIP, io.join(gcs_bucket, "orbax", "ckpt")],
        capture_output=True, text=True, timeout=240, env=dict(os.environ),
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0 and "round trip ok" in result.stdout, result.stderr[-3000:]


def test_tf_gfile_cannot_reach_the_emulator(gcs_bucket) -> None:
    # TensorFlow's GCS filesystem has its endpoint fixed at www.googleapis.com: tf.data and TFDS
    # records on gs:// cannot be tested here, only that the URI reaches TensorFlow unchanged. If
    # this starts failing, TF learned to use the emulator and the data tests can use it too.
    import tensorflow as tf

    uri = io.write_text(io.join(gcs_bucket, "tf", "probe.txt"), "x")
    assert io.exists(uri)
    try:
        seen = tf.io.gfile.exists(os.fspath(uri))
    except tf.errors.OpError:
        seen = False
    assert not seen


def test_sentencepiece_cache_on_gcs(gcs_bucket, monkeypatch) -> None:
    from jaxlm.data import sentencepiece_vocab as spv
    from tests.data._util import english_texts

    data_dir = io.join(gcs_bucket, "spm-tfds")
    calls = []

    def texts():
        calls.append(1)
        return iter(english_texts(200_000))

    path = spv.sentencepiece_cache_path("topics", vocab_size=640, data_dir=data_dir)
    assert path.startswith(f"{data_dir}/vocab/topics_640_")
    # Another process of a multi-host run does not train a shared (URI) cache: it waits for it.
    monkeypatch.setattr(io, "is_writer", lambda process_index=None: False)
    monkeypatch.setattr(spv, "_TRAINING_WAIT_S", 0.05)
    with pytest.raises(TimeoutError, match="topics_640_"):
        spv.get_or_train_sentencepiece("topics", texts, vocab_size=640, data_dir=data_dir)
    assert not calls and not io.exists(path)
    monkeypatch.undo()

    trained = spv.get_or_train_sentencepiece("topics", texts, vocab_size=640, data_dir=data_dir)
    assert trained.path == path and io.listdir(io.join(data_dir, "vocab")) == [path.split("/")[-1]]
    reused = spv.get_or_train_sentencepiece("topics", texts, vocab_size=640, data_dir=data_dir)
    assert len(calls) == 1 and reused.encode("The loop") == trained.encode("The loop")


def test_text_files_refuse_uris_by_name(tmp_path, monkeypatch) -> None:
    from jaxlm.data.text_files import resolve_text_files

    with pytest.raises(ValueError, match="'gs://b/texts'.*local paths"):
        resolve_text_files(["gs://b/texts"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("a")
    assert resolve_text_files("t") == (str(tmp_path / "t"), [str(tmp_path / "t" / "a.txt")])


def test_metrics_writer_keeps_every_line_and_uploads_events(root: str) -> None:
    import json

    from jaxlm.metrics import MetricsWriter

    run = io.join(root, "run")
    for steps in ((1, 2), (3,)):  # a second writer: a resumed run in the same workdir
        writer = MetricsWriter(run, enabled=True)
        for step in steps:
            writer.write(step, "train", {"loss": 1.0 / step})
        writer.close()
    lines = io.read_text(io.join(run, "metrics.jsonl")).splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    events = io.glob(run, "train/events.out.tfevents.*")
    assert len(events) == 2 and all(len(io.read_bytes(e)) > 100 for e in events)
