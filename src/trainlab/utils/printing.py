"""The resolved config as a tree: always saved to the run directory, printed when asked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rich
import rich.console
import rich.syntax
import rich.text
import rich.tree
from omegaconf import DictConfig, OmegaConf

from trainlab.utils.config import STUDY_AXES

# config_tree.log is read in an editor, not a terminal: no line is cut or wrapped at 80 columns
FILE_WIDTH = 1000


def config_tree(cfg: DictConfig, order: Sequence[str] = STUDY_AXES, highlight: bool = True) -> rich.tree.Tree:
    """Each top-level group as a branch, study axes first; `highlight`: YAML syntax colours (for a
    terminal; lexing them is most of the tree's cost, 20 ms a run)."""
    tree = rich.tree.Tree("CONFIG", style="bold", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        ).rstrip("\n")
        body = rich.syntax.Syntax(text, "yaml", theme="ansi_dark") if highlight else rich.text.Text(text)
        tree.add(key, style="bold").add(body)
    return tree


def print_config_tree(
    cfg: DictConfig, save_to: Path | None = None, order: Sequence[str] = STUDY_AXES
) -> None:
    """Save the tree to `save_to` in full width, and print it on the terminal when the config
    asks for it (`print_config=true`)."""
    if cfg.get("print_config"):
        rich.print(config_tree(cfg, order))
    if save_to is not None:
        with open(save_to, "w") as file:  # plain text: no colours to lex
            console = rich.console.Console(file=file, width=FILE_WIDTH, color_system=None)
            console.print(config_tree(cfg, order, highlight=False))
