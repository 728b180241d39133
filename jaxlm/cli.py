"""Command-line plumbing shared by experiments/*.py: config flags, one-line errors, "did you mean".

    _CONFIG = cli.define_config_flag(default=config_lib.__file__, documented_in="jaxlm/config.py")
    ...
    if __name__ == "__main__":
        cli.run(main)          # absl app.run whose flag errors are one line and exit 2

A mistyped `--config.optim.lr=0.1` ends with
`config error: unknown field optim.lr; did you mean optim.learning_rate?` and exit status 2, before
JAX initialises anything; argparse scripts get the same treatment through `ArgumentParser`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import ml_collections
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_lib

# Exit status of every usage or config error (argparse's and the shell's convention).
USAGE_EXIT = 2
HELP_FLAGS = frozenset({"--help", "-h", "-?", "--helpshort", "--helpfull"})


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions each cost 1."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def closest(name: str, candidates: Iterable[str], count: int = 3) -> list[str]:
    """The candidates nearest to `name` by edit distance (all that tie for nearest, at most
    `count`); none when even the nearest is further than about half of `name`.

    A candidate whose words start with the letters of the last component (`lr` ->
    `learning_rate`) counts as distance 1: that is how abbreviations are usually mistyped.
    """
    def distance(candidate: str) -> int:
        leaf, candidate_leaf = name.rsplit(".", 1)[-1], candidate.rsplit(".", 1)[-1]
        d = edit_distance(name, candidate)
        return min(d, 1) if _is_abbreviation(leaf, candidate_leaf) else d

    scored = sorted((distance(c), c) for c in set(candidates))
    if not scored or scored[0][0] > max(2, len(name) // 2):
        return []
    return [c for d, c in scored if d == scored[0][0]][:count]


def _is_abbreviation(short: str, long: str) -> bool:
    """`lr` of `learning_rate`: the letters of `short` start `long`'s words, in order."""
    initials = "".join(word[:1] for word in long.split("_"))
    return len(short) >= 2 and (initials == short or (long.startswith(short) and short != long))


def config_leaves(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of a ConfigDict (sections are not leaves)."""
    paths = []
    for key in config.keys():
        value = config[key]
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            paths += config_leaves(value, path + ".")
        else:
            paths.append(path)
    return paths


def unknown_field_message(path: str, config: ml_collections.ConfigDict) -> str:
    """'unknown field optim.lr; did you mean optim.learning_rate?' with the closest leaves."""
    leaves = config_leaves(config)
    section, _, leaf = path.rpartition(".")
    same_section = [p for p in leaves if p.rpartition(".")[0] == section]
    # The field's section first; then the field's name in any section (a misplaced field).
    suggestions = closest(path, same_section) or [
        p for p in leaves if p.rpartition(".")[2] in closest(leaf, {
            q.rpartition(".")[2] for q in leaves})][:3]
    if suggestions:
        return f"unknown field {path}; did you mean {' or '.join(suggestions)}?"
    valid = same_section or leaves
    return f"unknown field {path}; valid fields{' of ' + section if same_section else ''}: " \
        + ", ".join(valid)


def _sections(config: ml_collections.ConfigDict) -> list[str]:
    return [key for key in config.keys() if isinstance(config[key], ml_collections.ConfigDict)]


def config_sections_help(config: ml_collections.ConfigDict, documented_in: str) -> str:
    """The text of --config's help: its sections and the file that documents every field."""
    sections = _sections(config)
    top = [key for key in config.keys() if key not in sections]
    return (f"Run config file[:arg] (default and field documentation: {documented_in}). "
            f"Top-level fields: {', '.join(top)}. Sections: {', '.join(sections)}. Override any "
            "field as --config.SECTION.FIELD=VALUE (e.g. --config.model.d_model=128); an unknown "
            "field is refused with the closest names.")


def run_config_epilog(config: ml_collections.ConfigDict,
                      source: str = "a --workdir's config.json holds the resolved fields of the "
                                    "run config") -> str:
    """--help epilog of scripts that read run configs without a --config flag of their own."""
    sections = _sections(config)
    return (f"Run config: {source}, documented in jaxlm/config.py (sections: "
            f"{', '.join(sections)}); experiments/configs/*.py hold the per-objective presets.")


def define_config_flag(default: str, documented_in: str,
                       config: ml_collections.ConfigDict | None = None,
                       flag_values: flags.FlagValues = flags.FLAGS,
                       argv: Sequence[str] | None = None) -> Any:
    """`--config` (ml_collections config file, locked) with a help text listing its sections.

    ml_collections reads the `--config.*` overrides of `argv` (default sys.argv) already here, at
    definition: a mistyped field ends the program with one line and exit status 2.
    """
    help_text = (config_sections_help(config, documented_in) if config is not None else
                 f"Run config file[:arg] (fields documented in {documented_in}).")
    try:
        holder = config_flags.DEFINE_config_file("config", default=default, help_string=help_text,
                                                 lock_config=True, flag_values=flag_values,
                                                 sys_argv=None if argv is None else list(argv))
    except Exception as error:  # noqa: BLE001 - every override error becomes one line
        argv = list(sys.argv if argv is None else argv)
        print(flag_error_message(argv, error, _load_config(_config_path(argv, default))),
              file=sys.stderr)
        sys.exit(USAGE_EXIT)
    # --help lists the main module's flags: make --config one of them, not jaxlm.cli's.
    flag_values.register_key_flag_for_module(sys.argv[0], flag_values["config"])
    return holder


def _config_path(argv: Sequence[str], default: str) -> str:
    """The `--config=PATH[:arg]` of `argv` (the last one wins, as in absl), else the default."""
    path = default
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    return path


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path/to/config.py[:arg]` -> its get_config(arg), read as `--config` reads it."""
    return config_flags_lib.ConfigFileFlagParser(name="config").parse(spec)


def _load_config(path: str) -> ml_collections.ConfigDict | None:
    try:
        return load_config_file(path)
    except Exception:  # noqa: BLE001 - an unloadable file is reported by the caller's message
        return None


def apply_overrides(config: ml_collections.ConfigDict, assignments: Sequence[str]) -> None:
    """Sets each `section.field=value` (a Python literal, else the string) on `config`;
    an unknown field raises ValueError with the closest names."""
    leaves = set(config_leaves(config))
    for item in assignments:
        path, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: expected section.field=value")
        if path not in leaves:
            raise ValueError(unknown_field_message(path, config))
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *sections, field = path.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[field] = value


def flag_error_message(argv: Sequence[str], error: Exception,
                       config: ml_collections.ConfigDict | None,
                       flag_names: Iterable[str] = ()) -> str:
    """One line for a failed parse of `argv`: unknown config fields get their closest names."""
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=", 1)[0]
        if config is not None and path not in config_leaves(config):
            return "config error: " + unknown_field_message(path, config)
    if isinstance(error, flags.UnrecognizedFlagError):
        name = getattr(error, "flagname", "") or str(error)
        suggestions = closest(name, [n for n in flag_names if not n.startswith("config.")])
        return f"error: unknown flag --{name}; did you mean --{' or --'.join(suggestions)}?"
    message = " ".join(str(error).split())
    return f"config error: {message}" if any(a.startswith("--config") for a in argv) else \
        f"error: {message}"


def _parsed_config(argv: Sequence[str],
                   flag_values: flags.FlagValues) -> ml_collections.ConfigDict | None:
    """The config file that `argv` names (or the flag's default), loaded afresh."""
    if "config" not in flag_values:
        return None
    flag = flag_values["config"]
    named = _config_path(argv, "")
    if named:
        return _load_config(named)
    return flag.default if isinstance(flag.default, ml_collections.ConfigDict) else None


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """absl's flag parsing, except that an error prints one line and exits with status 2."""
    try:
        return flag_values(argv)
    except SystemExit:
        if HELP_FLAGS.intersection(argv):  # absl's help exits 1; asking for help is no error
            sys.exit(0)
        raise
    except Exception as error:  # noqa: BLE001 - every parse error becomes the same one line
        print(flag_error_message(argv, error, _parsed_config(argv, flag_values), list(flag_values)),
              file=sys.stderr)
        sys.exit(USAGE_EXIT)


def run(main: Callable[[list[str]], int]) -> NoReturn:
    """`absl.app.run(main)` with one-line flag errors; main's return value is the exit status."""
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
    raise AssertionError("unreachable")  # app.run exits


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line 'unknown flag --x; did you mean --y?' error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            name = next((arg for arg in unknown if arg.startswith("-")), unknown[0])
            flag = name.split("=", 1)[0]
            options = _option_strings(self)
            message = f"unknown flag {flag}; did you mean {' or '.join(closest(flag, options))}?"
        self.exit(USAGE_EXIT, f"{self.prog}: error: {' '.join(message.split())}\n")


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every --option of `parser` and of its sub-commands' parsers."""
    options = []
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list of its actions
        options += [o for o in action.option_strings if o.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                options += _option_strings(sub)
    return options
