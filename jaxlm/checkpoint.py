"""Orbax checkpoints of the train state, the data position and the model config.

Saves are asynchronous and keep the newest `keep`. Restoring takes abstract target arrays carrying
shardings, so a checkpoint written on one mesh restores onto any other mesh or device count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

import jax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from jaxlm import io, sharding

if TYPE_CHECKING:
    from jaxlm.models import ModelConfig

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint could be restored."""


class Checkpointer:
    """`WORKDIR/checkpoints`: state (sharded arrays), data iterator state and model config.

    On `gs://` Orbax writes each step in place and marks it complete with commit_success.txt; a
    step without it (a save cut short) is not listed, so a resume takes the previous one.
    """

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True) -> None:
        if keep < 1:
            raise ValueError(f"checkpoint.keep={keep} is invalid: expected at least 1.")
        self.directory = io.join(workdir, "checkpoints")  # a gs:// workdir stays a URI
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None, model_config: Any,
             force: bool = False) -> bool:
        """Starts an (async) save of step; returns whether a save was started."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            model=ocp.args.JsonSave(_config_dict(model_config)))
        return self._manager.save(int(step), args=args, force=force)

    def restore(self, abstract_state: Any, model_config: Any,
                step: int | None = None) -> tuple[int, Any, dict]:
        """Restores (step, state, data_state) onto the shardings of `abstract_state`.

        Without `step`, tries the newest checkpoint and falls back to older ones when it is
        unreadable (reported in the log). A checkpoint of a different model is refused.
        """
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"No checkpoint in {self.directory}.")
        errors = []
        for candidate in steps:
            try:
                saved_model = self._manager.restore(
                    candidate, args=ocp.args.Composite(model=ocp.args.JsonRestore()))["model"]
            except Exception as error:  # an unreadable step: try the previous one
                errors.append(f"step {candidate}: {error}")
                log.warning("Checkpoint step %d is unreadable (%s); trying an older one.",
                            candidate, error)
                continue
            _check_compatible(saved_model, _config_dict(model_config), candidate)
            try:
                restored = self._manager.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore()))
            except Exception as error:
                errors.append(f"step {candidate}: {error}")
                log.warning("Checkpoint step %d could not be restored (%s); trying an older one.",
                            candidate, error)
                continue
            return candidate, restored["state"], dict(restored["data"] or {})
        raise CheckpointError(f"No checkpoint in {self.directory} could be restored:\n"
                              + "\n".join(errors))

    def wait(self) -> None:
        """Blocks until every started save is committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings: the restore target for any mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                        shardings)


def _config_dict(model_config: Any) -> dict:
    if dataclasses.is_dataclass(model_config):
        return dataclasses.asdict(model_config)
    return dict(model_config or {})


# Fields that change compute or memory but neither the parameters' meaning nor their tree.
_RESUMABLE_FIELDS = {"dtype", "remat_policy", "attention_impl", "dropout_rate",
                     "attention_dropout_rate"}


def _check_compatible(saved: dict, current: dict, step: int) -> None:
    differences = [f"model.{k}: checkpoint {saved.get(k)!r}, config {current.get(k)!r}"
                   for k in sorted(set(saved) | set(current))
                   if k not in _RESUMABLE_FIELDS and saved.get(k) != current.get(k)]
    if differences:
        raise ValueError(f"The checkpoint at step {step} is of a different model; refusing to "
                         "resume. Use a new --workdir, or restore the model config:\n  "
                         + "\n  ".join(differences))


class PreemptionWatcher:
    """Turns SIGTERM (Cloud TPU preemption) and SIGINT into a flag the train loop polls, so the
    loop saves the current step and exits cleanly instead of dying mid-step."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A run directory's model, newest params, vocabulary and resolved run config."""

    model: Any  # the Flax module: model.apply({'params': params}, batch, return_hidden=True)
    params: Any
    vocab: Any  # jaxlm.data.tokenizer.Vocabulary
    config: dict  # WORKDIR/config.json
    model_config: Any  # jaxlm.models.ModelConfig


def load_run(run_dir: str, step: int | None = None) -> LoadedRun:
    """The model of a run directory written by experiments/pretrain.py or by one arm of the
    objective comparison (WORKDIR/seed_<n>/<objective>-<architecture>/): its params (the newest
    checkpoint without `step`), model, vocabulary (the run's data.vocab; a trained SentencePiece
    model is read from its cache in the run's data_dir) and config.json."""
    from jaxlm.data.sources import DataConfig, make_vocabulary
    from jaxlm.models import build_model

    config = read_run_config(run_dir)
    if not config:
        result = io.join(run_dir, "result.json")  # a comparison folder without a trainer run
        if io.exists(result) and json.loads(io.read_text(result)).get("objective") == "none":
            raise FileNotFoundError(
                f"{run_dir!r} is a no-pretraining baseline of the objective comparison: nothing "
                "was pretrained, so it has no checkpoint to load (its scores are in result.json "
                "and evaluation.npz).")
        raise FileNotFoundError(f"{run_dir!r} has no config.json: not a jaxlm run directory.")
    model_config, params = load_pretrained(run_dir, step)
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    data = DataConfig(**{k: v for k, v in config.get("data", {}).items() if k in fields})
    return LoadedRun(build_model(model_config), params, make_vocabulary(data), config,
                     model_config)


def load_pretrained(workdir: str, step: int | None = None,
                    mesh: Mesh | None = None,
                    rules: sharding.Rules = sharding.DEFAULT_RULES) -> tuple[ModelConfig, Any]:
    """(ModelConfig, params) of a trainer run directory's checkpoint (the newest without `step`).

    Only the params are read (a partial Orbax restore of the `state` item): the optimizer state,
    often twice their size, stays on disk. They land on `mesh` (default all devices, data
    parallel) with the logical-axis shardings of the trainer.
    """
    from jaxlm.models import ModelConfig, build_model, dummy_batch, init_params

    directory = io.join(workdir, "checkpoints")  # a gs:// workdir stays a URI
    if not io.isdir(directory):
        raise FileNotFoundError(f"{workdir!r} has no checkpoints/ folder: not a jaxlm run "
                                "directory (pass the --workdir of a pretraining run).")
    manager = ocp.CheckpointManager(
        directory, item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                  "model": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise FileNotFoundError(f"No checkpoint in {directory}.")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"No checkpoint of step {step} in {directory}; steps: {steps}.")
        saved = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
        unknown = sorted(set(saved["model"]) - {f.name for f in dataclasses.fields(ModelConfig)})
        if unknown:
            raise ValueError(f"The checkpoint's model config in {directory} has fields this "
                             f"jaxlm does not know: {unknown}.")
        cfg = ModelConfig(**saved["model"])
        model = build_model(cfg)
        boxed = jax.eval_shape(lambda: init_params(model, jax.random.key(0), dummy_batch(cfg)))
        mesh = mesh or sharding.make_mesh(-1, 1, 1)
        shardings = sharding.tree_shardings(boxed, mesh, rules)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                sharding.unbox_values(boxed), shardings)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={"params": abstract},
            restore_args={"params": ocp.checkpoint_utils.construct_restore_args(abstract)},
            partial_restore=True)))
    finally:
        manager.close()
    log.info("Loaded %s params of step %d from %s.", cfg.family, step, directory)
    return cfg, restored["state"]["params"]


def read_run_config(workdir: str) -> dict[str, Any]:
    """WORKDIR/config.json as a dict ({} when absent), e.g. for its data.vocab."""
    path = io.join(workdir, "config.json")
    if not io.exists(path):
        return {}
    return json.loads(io.read_text(path))
