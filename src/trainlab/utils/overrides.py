"""Hydra override strings (`key=value`, `+key=value`, `++key=value`, `~key`), read in one place.

A run records its overrides as Hydra gave them (summary.json `overrides`, `.hydra/overrides.yaml`);
reports, the search for earlier runs and the studies read them back here. The value is kept as
the text the user typed (`optimizer.lr=0.10` stays `0.10`, a list stays `[0,1]`): reports show
it and runs are matched on it. Hydra's own OverridesParser would turn it into a typed value and
costs a grammar parse per string, for nothing these readers need.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Override:
    key: str  # the dotted key or config group, without Hydra's prefix
    value: str | None  # the text after the first `=`, as given; None without `=` (`~key`)
    prefix: str = ""  # "", "+" (add), "++" (add or override) or "~" (delete)

    @property
    def is_sweep(self) -> bool:
        """A comma-separated list of values (a multirun sweep); `[a,b]` is one list value."""
        value = (self.value or "").strip()
        return "," in value and not value.startswith("[")


def parse_override(text: str) -> Override:
    """`++model.lr=0.1` -> Override(key='model.lr', value='0.1', prefix='++')."""
    body = text.lstrip("+~")
    key, sep, value = body.partition("=")
    return Override(key=key, value=value if sep else None, prefix=text[: len(text) - len(body)])


def override_values(overrides: Iterable[str]) -> dict[str, str]:
    """{key: value} of the overrides that set a value (deletions left out); the last one wins."""
    parsed = (parse_override(o) for o in overrides)
    return {o.key: o.value for o in parsed if o.value is not None}


# Overrides that do not change what a run computes: two runs differing only in these are the same
# run (skip_completed), and a run's name leaves them out.
BOOKKEEPING = (
    "skip_completed",
    "hydra.",
    "paths.",
    "task_name",
    "tags",
    "logger",
    "callbacks.rich_progress_bar",
    "trainer.enable_progress_bar",
    "trusted_targets",
)


def is_bookkeeping(text: str) -> bool:
    """Whether the override `text` only changes how a run is run or recorded (see BOOKKEEPING)."""
    return parse_override(text).key.startswith(BOOKKEEPING)


@contextmanager
def command_line(arguments: list[str], program: str = "") -> Iterator[None]:
    """`sys.argv` is `[program, *arguments]` for the block (the program's name kept when there is
    one): for code that reads the command line itself, as Hydra's `main` and W&B's run start do."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else program, *arguments]
    try:
        yield
    finally:
        sys.argv = saved
