"""What a run checks in its directory before it writes there (holding its lock, see run/lock.py).

- No file in it is a symbolic link. Loggers append to their files in place (Lightning's CSV
  logger to `csv/metrics.csv`, the config tree to `config_tree.log`): through a link they would
  write into whatever file it points at, outside the run. A linked file is refused with an error
  naming it; linked directories (a `checkpoints/` on a scratch disk) are allowed, and so are
  W&B's own links under `wandb/`.
- No temporary checkpoint of a killed write is left: `.<name>.*.tmp` in `checkpoints/`
  (trainlab.checkpoints.atomic_io writes there first, then renames) is removed. With the lock
  held no other process can be writing one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Directories whose links belong to their writer: W&B links debug.log and latest-run
OWN_LINKS = ("wandb",)


class LinkedFileInRun(RuntimeError):
    """A file in the run directory is a symbolic link: writing it would write its target."""


def refuse_linked_files(run_dir: Path) -> None:
    """Raise LinkedFileInRun naming each file under `run_dir` that is a symbolic link."""
    run_dir = Path(run_dir)
    linked = []
    for directory, subdirectories, files in os.walk(run_dir):  # does not enter linked directories
        if Path(directory) == run_dir:
            subdirectories[:] = [d for d in subdirectories if d not in OWN_LINKS]
        for name in files:
            path = Path(directory) / name
            if path.is_symlink() and not path.is_dir():
                linked.append(f"{path.relative_to(run_dir)} -> {os.readlink(path)}")
    if linked:
        raise LinkedFileInRun(
            f"{run_dir} holds files that are symbolic links: {', '.join(sorted(linked))}. A run writes "
            "its files in place, and through a link it would write the file the link points at. "
            "Remove the links (or copy the files they point at), or give this run another directory."
        )


def remove_orphaned_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files of checkpoint writes that a kill interrupted; return them."""
    checkpoints = Path(run_dir) / "checkpoints"
    orphans = sorted(checkpoints.glob(".*.tmp")) if checkpoints.is_dir() else []
    for path in orphans:
        if path.is_file() and not path.is_symlink():
            path.unlink()
    if orphans:
        log.info(
            f"Removed {len(orphans)} temporary checkpoint file(s) of an interrupted write in {checkpoints}."
        )
    return orphans
