"""Command lines as a user types them: every config leaf overridable, one-line errors with
suggestions, --help that names the config sections."""

import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags

from jaxlm import cli
from tests.xla import script_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_files() -> list[str]:
    files = [os.path.join(ROOT, "jaxlm", "config.py"), os.path.join(ROOT, "jaxlm", "compare.py")]
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py"))):
        if os.path.basename(path) in ("common.py", "__init__.py"):
            continue
        source = open(path).read()
        if "def get_config(size" in source:  # a per-objective config: every size
            from experiments.configs.common import SIZES
            files += [f"{path}:{size}" for size in SIZES]
        else:
            files.append(path)
    return files


def _holder(config: ml_collections.ConfigDict, path: str) -> tuple[ml_collections.ConfigDict, str]:
    *sections, key = path.split(".")
    for section in sections:
        config = config[section]
    return config, key


def _new_value(config: ml_collections.ConfigDict, path: str) -> tuple[str, object]:
    """A command-line string for the leaf at `path` and the value it must parse to."""
    holder, key = _holder(config, path)
    value, kind = holder[key], holder.get_type(key)
    if kind is bool:
        return str(not value), not value
    if kind is int:
        new = 7 if value is None else value + 3
        return str(new), new
    if kind is float:
        new = 0.25 if value is None else value * 2 + 0.5
        return repr(new), new
    if kind is str:
        return "overridden", "overridden"
    raise AssertionError(f"{path}: a leaf of type {kind} has no command-line form in this test")


@pytest.mark.parametrize("config_file", _config_files(),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_every_leaf_of_every_config_is_overridable_from_the_command_line(config_file):
    loaded = cli.load_config_file(config_file)
    leaves = cli.config_leaves(loaded)
    assert len(leaves) > 5
    expected, argv = {}, ["prog", f"--config={config_file}"]
    for path in leaves:
        text, value = _new_value(loaded, path)
        argv.append(f"--config.{path}={text}")
        expected[path] = value
    flag_values = flags.FlagValues()
    cli.define_config_flag(config_file, "the file", flag_values=flag_values, argv=argv)
    flag_values(argv)
    parsed = flag_values["config"].value
    for path, value in expected.items():
        holder, key = _holder(parsed, path)
        assert holder[key] == value, path


def test_model_fields_that_default_to_none_are_typed():
    from jaxlm import config as config_lib
    from jaxlm.models.config import FIELD_TYPES

    model = config_lib.get_config().model
    assert {key: model.get_type(key) for key in FIELD_TYPES} == FIELD_TYPES
    assert FIELD_TYPES["num_kv_heads"] is int and FIELD_TYPES["scan_layers"] is bool


@pytest.mark.parametrize("name,candidates,expected", [
    ("optim.lr", ["optim.learning_rate", "optim.b1", "optim.b2", "optim.eps"],
     ["optim.learning_rate"]),
    ("model.d_modl", ["model.d_model", "model.d_ff", "model.dtype"], ["model.d_model"]),
    ("train.step", ["train.steps", "train.batch_size"], ["train.steps"]),
    ("zzzzzzzzzz", ["train.steps", "seed"], []),
])
def test_closest_names(name, candidates, expected):
    assert cli.closest(name, candidates) == expected


def test_edit_distance():
    assert cli.edit_distance("kitten", "sitting") == 3
    assert cli.edit_distance("", "abc") == 3
    assert cli.edit_distance("same", "same") == 0


def test_unknown_field_message_suggests_across_sections_and_lists_when_nothing_is_close():
    from jaxlm import config as config_lib

    config = config_lib.get_config()
    assert cli.unknown_field_message("trian.steps", config) == \
        "unknown field trian.steps; did you mean train.steps?"
    assert cli.unknown_field_message("lr", config) == \
        "unknown field lr; did you mean optim.learning_rate?"
    message = cli.unknown_field_message("mesh.qqqqqqqqqq", config)
    assert message.startswith("unknown field mesh.qqqqqqqqqq; valid fields of mesh: ")
    assert "mesh.fsdp" in message


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = script_environment()
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def _error_lines(stderr: str) -> list[str]:
    # TensorFlow may log at import; what the program says is every other line.
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith(("WARNING: All log", "I0000", "W0000"))]


def test_pretrain_misspelled_field_is_one_line_and_exit_2(tmp_path):
    result = _run("pretrain.py", f"--workdir={tmp_path}", "--config.optim.lr=0.1")
    assert result.returncode == 2
    assert _error_lines(result.stderr) == [
        "config error: unknown field optim.lr; did you mean optim.learning_rate?"]
    assert not os.listdir(tmp_path)  # nothing ran


@pytest.mark.parametrize("script,args,line", [
    ("compare_objectives.py", ["--config.pretrain.token=5"],
     "config error: unknown field pretrain.token; did you mean pretrain.tokens?"),
    ("pretrain.py", ["--config=experiments/configs/mlm.py:tiny", "--workdir=unused",
                     "--config.objectives.mlm.mask_rat=0.2"],
     "config error: unknown field objectives.mlm.mask_rat; did you mean objectives.mlm.mask_rate?"),
    ("pretrain.py", ["--workdr=unused"], "error: unknown flag --workdr; did you mean --workdir?"),
    ("finetune.py", ["--from_scratch", "--lerning_rate=1"],
     "finetune.py: error: unknown flag --lerning_rate; did you mean --learning_rate?"),
    ("generate.py", ["--workdir=unused", "--prompt=a", "--temprature=1"],
     "generate.py: error: unknown flag --temprature; did you mean --temperature?"),
    ("benchmark.py", ["train", "--num_layrs", "2"],
     "benchmark.py: error: unknown flag --num_layrs; did you mean --num_layers?"),
    ("benchmark.py", ["loop", "--set", "optim.lr=0.1"],
     "benchmark.py loop: config error: unknown field optim.lr; did you mean optim.learning_rate?"),
])
def test_scripts_refuse_unknown_names_in_one_line(script, args, line):
    result = _run(script, *args)
    assert (result.returncode, _error_lines(result.stderr)) == (2, [line])


@pytest.mark.parametrize("script,needle", [
    ("pretrain.py", "Sections: checkpoint, data, mesh, model, objectives, optim, train"),
    ("compare_objectives.py", "Sections: data, evaluation, finetune, mesh, model, pretrain"),
    ("finetune.py", "documented in jaxlm/config.py (sections: checkpoint, data, mesh, model"),
    ("generate.py", "documented in jaxlm/config.py (sections: checkpoint, data, mesh, model"),
    ("benchmark.py", "documented in jaxlm/config.py (sections: checkpoint, data, mesh, model"),
])
def test_help_names_the_config_sections_and_their_file(script, needle):
    result = _run(script, "--help")
    assert result.returncode == 0
    assert needle in " ".join(result.stdout.split())


def test_model_size_overrides_train_and_reach_the_saved_config(tmp_path, corpus_dir):
    result = _run("pretrain.py", f"--workdir={tmp_path}", "--config.model.preset=tiny",
                  "--config.model.d_model=128", "--config.model.num_layers=3",
                  "--config.model.num_heads=2", "--config.model.d_ff=96",
                  "--config.train.steps=2", "--config.train.batch_size=4",
                  "--config.data.seq_len=32", f"--config.data.data_dir={corpus_dir}",
                  "--config.train.eval_batches=1", "--config.data.shuffle_buffer=64",
                  "--config.data.window=32")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "config.json") as f:
        model = json.load(f)["model"]
    assert (model["d_model"], model["num_layers"], model["num_heads"], model["d_ff"]) == \
        (128, 3, 2, 96)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert max(steps) == 2
