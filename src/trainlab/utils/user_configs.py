"""What a command line can tell before Hydra runs: a user's own config folders (`--config-dir`,
`hydra.searchpath=[file://...]`), and a task_name that would leave logs/.

Hydra reports a YAML syntax error in such a folder as a long traceback whose last lines name the
file; an interpolation that does not parse (`${model.depth`) with no file at all ("no viable
alternative at input"); and a file that holds a list instead of keys not at all. Every YAML
file of those folders is read here first, so that each problem is one line naming the file, the
line and the column. trainlab's own configs are tested (tests/test_configs.py) and not read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trainlab.utils.config import ConfigError

SEARCHPATH_KEYS = ("hydra.searchpath", "+hydra.searchpath", "++hydra.searchpath")


def user_config_dirs(arguments: Iterable[str]) -> list[Path]:
    """The folders of `--config-dir`/`-cd` and of `file://` entries of `hydra.searchpath=[...]` in a
    command line (`pkg://` entries are installed packages: their configs are their authors')."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    arguments, folders = list(arguments), []
    for i, argument in enumerate(arguments):
        if argument in ("--config-dir", "-cd") and i + 1 < len(arguments):
            folders.append(arguments[i + 1])
        elif argument.startswith(("--config-dir=", "-cd=")):
            folders.append(argument.split("=", 1)[1])
        elif argument.split("=", 1)[0] in SEARCHPATH_KEYS:
            try:
                value = parser.parse_override(argument).value()
            except Exception:  # Hydra names a malformed override itself
                continue
            entries = value if isinstance(value, list) else [value]
            folders += [str(e)[len("file://") :] for e in entries if str(e).startswith("file://")]
    return [Path(f).expanduser() for f in folders if Path(f).expanduser().is_dir()]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def check_config_file(path: Path) -> None:
    """One YAML config file: it parses, holds keys (or nothing), and its interpolations parse."""
    import yaml
    from omegaconf import grammar_parser
    from omegaconf._utils import get_yaml_loader
    from omegaconf.errors import GrammarParseError

    from trainlab.utils.resolvers import directory_name

    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=get_yaml_loader())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (error.context, error.problem) if p)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}.") from error
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if content is not None and not isinstance(content, dict):
        raise ConfigError(
            f"{path}: a config file holds keys (`key: value` lines); this one holds a YAML "
            f"{type(content).__name__}."
        )
    if (
        isinstance(content, dict)
        and isinstance(content.get("task_name"), str)
        and "${" not in content["task_name"]
    ):
        try:
            directory_name(content["task_name"])
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    for text in _strings(content):
        if "${" in text:
            try:
                grammar_parser.parse(text, lexer_mode="VALUE_MODE")
            except GrammarParseError as error:
                raise ConfigError(
                    f"{path}: the interpolation in {text!r} does not parse ({error}); it reads "
                    "${key} or ${resolver:arguments}."
                ) from error


def check_user_config_files(arguments: Iterable[str]) -> None:
    """Every .yaml file under the command line's own config folders (user_config_dirs), hidden
    folders (.git, .github) left out."""
    for folder in user_config_dirs(arguments):
        for path in sorted(folder.rglob("*.yaml")):
            if not any(part.startswith(".") for part in path.relative_to(folder).parts):
                check_config_file(path)


def check_command_line(arguments: Iterable[str]) -> None:
    """What a command line can tell before Hydra makes the run directory: the user's own config files
    (check_user_config_files) and a `task_name=` that would leave logs/ (the trainlab_dir_name
    resolver stops Hydra too, but with a traceback; a task_name set in a config file meets it)."""
    from trainlab.utils.overrides import parse_override
    from trainlab.utils.resolvers import directory_name

    arguments = list(arguments)
    check_user_config_files(arguments)
    for argument in arguments:
        override = parse_override(argument)
        if override.key == "task_name" and override.value is not None and not override.is_sweep:
            directory_name(override.value.strip("'\""))


def exit_on_bad_command_line(arguments: Iterable[str]) -> None:
    """check_command_line for an entry point: a problem ends the process with its one line (exit
    code 1), before Hydra makes a run directory."""
    try:
        check_command_line(arguments)
    except ConfigError as error:
        raise SystemExit(f"ConfigError: {error}") from None
