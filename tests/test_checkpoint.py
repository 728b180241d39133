"""Orbax checkpoints: keep N, data state, restore onto another mesh, corrupt fallback, refusal."""

import os
import shutil
import signal

import jax
import numpy as np
import pytest

from jaxlm import sharding
from jaxlm.checkpoint import Checkpointer, CheckpointError, PreemptionWatcher, abstract_like
from jaxlm.models import build_model
from jaxlm.optim import AdafactorConfig, OptimConfig, make_optimizer
from jaxlm.train import create_train_state, jit_train_step

from .models._util import random_batch, tiny
from .test_train import synthetic_batches

CFG = tiny("decoder", scan_layers=True, num_kv_heads=2)


def state_on(mesh, optim=OptimConfig()):
    model = build_model(CFG)
    return create_train_state(model, make_optimizer(optim), 0, random_batch(CFG, 8, 8), mesh)


def test_save_keeps_n_and_restores_onto_other_meshes(tmp_path):
    state, _ = state_on(sharding.make_mesh(2, 2, 2))
    ckpt = Checkpointer(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, state.replace(step=state.step + step), {"batches": step * 10}, CFG)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    for mesh in (sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1]),
                 sharding.make_mesh(4, 2, 1)):
        target, shardings = state_on(mesh)
        step, restored, data = ckpt.restore(abstract_like(target, shardings), CFG)
        assert (step, data, int(restored.step)) == (3, {"batches": 30}, 3)
        jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
        leaf = jax.tree.leaves(restored.params)[0]
        assert leaf.sharding.mesh.shape == mesh.shape
    ckpt.close()


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    state, shardings = state_on(sharding.make_mesh(-1, 1, 1))
    ckpt = Checkpointer(str(tmp_path), keep=3, async_save=False)
    ckpt.save(1, state, {"batches": 1}, CFG)
    ckpt.save(2, state, {"batches": 2}, CFG)
    ckpt.wait()
    state_dir = os.path.join(ckpt.directory, "2", "state")
    shutil.rmtree(state_dir)
    os.makedirs(state_dir)
    step, _, data = ckpt.restore(abstract_like(state, shardings), CFG)
    assert (step, data) == (1, {"batches": 1})
    ckpt.close()


def test_incompatible_model_is_refused_and_empty_dir_reported(tmp_path):
    state, shardings = state_on(sharding.make_mesh(-1, 1, 1))
    ckpt = Checkpointer(str(tmp_path / "a"), async_save=False)
    ckpt.save(1, state, {}, CFG)
    ckpt.wait()
    with pytest.raises(ValueError, match=r"model\.d_model: checkpoint 64, config 128"):
        ckpt.restore(abstract_like(state, shardings), CFG.replace(d_model=128))
    # A different remat policy is the same model.
    ckpt.restore(abstract_like(state, shardings), CFG.replace(remat_policy="full"))
    with pytest.raises(CheckpointError, match="No checkpoint"):
        Checkpointer(str(tmp_path / "empty")).restore(abstract_like(state, shardings), CFG)
    ckpt.close()


def test_preemption_watcher_turns_sigterm_into_a_flag():
    watcher = PreemptionWatcher()
    try:
        assert not watcher.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.requested and watcher.signal_name == "SIGTERM"
    finally:
        watcher.restore_handlers()


def test_adafactor_state_restores_across_meshes_both_ways(tmp_path):
    # min_dim_size_to_factor 32: the tiny model's matrices get factored moments.
    optim = OptimConfig(name="adafactor", learning_rate=1e-2, warmup_steps=0,
                        schedule="constant", weight_decay=0.0,
                        adafactor=AdafactorConfig(min_dim_size_to_factor=32))
    one = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
    meshes = {"one": one, "2x2x2": sharding.make_mesh(2, 2, 2)}
    for source, target in (("2x2x2", "one"), ("one", "2x2x2")):
        state, shardings = state_on(meshes[source], optim)
        with sharding.activate(meshes[source]):
            state, _ = jit_train_step(build_model(CFG), optim, shardings, meshes[source])(
                state, jax.device_put(synthetic_batches(CFG, 1)[0],
                                      sharding.batch_sharding(meshes[source])))
        ckpt = Checkpointer(str(tmp_path / source), async_save=False)
        ckpt.save(1, state, {}, CFG)
        ckpt.wait()
        fresh, fresh_shardings = state_on(meshes[target], optim)
        _, restored, _ = ckpt.restore(abstract_like(fresh, fresh_shardings), CFG)
        ckpt.close()
        jax.tree.map(np.testing.assert_array_equal, restored, state)
        factored = restored.opt_state[1][0]  # [0] is the global-norm clipping's
        v_row = factored.v_row["decoder"]["layers"]["mlp"]["wi"]["kernel"]
        assert v_row.sharding.mesh.shape == meshes[target].shape
        assert float(np.abs(np.asarray(v_row)).sum()) > 0  # a trained moment, not the init


def test_load_run_reads_a_pretraining_run_dir(tmp_path, corpus_dir):
    from jaxlm import trainer
    from jaxlm.checkpoint import load_run
    from jaxlm.finetune import classifier_batch

    from .test_trainer import tiny_config

    config = tiny_config(corpus_dir, "mlm")
    config.train.steps = config.checkpoint.every_steps = 2
    workdir = str(tmp_path / "mlm")
    trainer.train(config, workdir, say=lambda line: None)  # what experiments/pretrain.py runs
    run = load_run(workdir)
    assert run.config["objective"] == "mlm" and run.model_config.family == "encoder"
    assert run.vocab.vocab_size == 384  # the byte vocabulary of the run
    tokens = np.asarray([run.vocab.encode("load me") + [1]], np.int32)
    hidden = run.model.apply({"params": run.params}, classifier_batch("encoder", tokens),
                             return_hidden=True)
    assert hidden.shape == (1, tokens.shape[1], run.model_config.d_model)
    logits = run.model.apply({"params": run.params}, classifier_batch("encoder", tokens))
    assert logits.shape[-1] == run.model_config.vocab_size
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_run(str(tmp_path))
