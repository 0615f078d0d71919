"""What a run says on the terminal: each library line once, no advertisements, and at the end
one line with the result and one with the files the run left."""

from __future__ import annotations

import logging
import math
from pathlib import Path

# The loggers Lightning's rank_zero_info writes to (Lightning points lightning_utilities' shared
# rank-zero logger at one of them, whichever of its packages was imported last).
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# The libraries that add a console handler of their own at import and still propagate to the
# root logger: every line of theirs printed twice once Hydra's job logging holds the root.
_OWN_HANDLER_LOGGERS = ("lightning", "torchmetrics")
# The headline metric: the first of these that a run has.
HEADLINE_METRICS = ("test/acc", "test/loss", "val/acc", "val/loss")


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing litlogger/litmodels" lines (it has no setting
    for them); every other rank-zero message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_library_output() -> None:
    """Let Hydra's job logging print and file every library line once, without advertisements.

    `import lightning` adds a stderr handler to the `lightning` logger whatever the root logger
    holds (its subpackages add theirs only when the root has none, and this follows that rule):
    with Hydra's handlers on the root, that handler is removed. Idempotent.
    """
    import lightning  # noqa: F401  (its handler must exist before it can be removed)

    if logging.getLogger().hasHandlers():
        for name in _OWN_HANDLER_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler and logger.propagate:
                    logger.removeHandler(handler)
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def result_line(summary: dict) -> str:
    """`Run completed: test/acc 0.984 (best val/acc 0.986 at epoch 12)` from a summary.json dict:
    the headline metric, then the best validation value (`<metric>_best`, `best_epoch`) when the
    summary has it, else the last validation value; the error when the run did not complete."""
    metrics = summary.get("metrics") or {}
    text = f"Run {summary.get('status', 'unknown')}"
    headline = next((m for m in HEADLINE_METRICS if m in metrics), None)
    if headline is not None:
        text += f": {headline} {_number(metrics[headline])}"
        val_metric = "val/" + headline.split("/", 1)[1]
        best = metrics.get(f"{val_metric}_best")
        epoch = metrics.get("best_epoch", summary.get("best_epoch"))
        if best is not None:
            text += f" (best {val_metric} {_number(best)}" + (
                f" at epoch {epoch})" if epoch is not None else ")"
            )
        elif val_metric != headline and val_metric in metrics:
            text += f" ({val_metric} {_number(metrics[val_metric])} at the last epoch)"
    if summary.get("status") != "completed" and summary.get("error"):
        text += f" — {str(summary['error']).splitlines()[0]}"
    return text


def run_files(output_dir: Path) -> list[str]:
    """What the run directory holds, as a reader looks for it: summary.json first, directories
    with a trailing slash (empty ones left out: no `checkpoints/` when none was written), a W&B
    directory as the path of its run (what `wandb sync` takes), and three or more files of one
    kind (`layer_stats_act_mean.png`, `layer_stats_dead.png`, ...) as one pattern with its count
    (`layer_stats_*.png (9)`). Hidden entries (.hydra) are left out."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    entries = sorted(p for p in output_dir.iterdir() if not p.name.startswith("."))
    kinds: dict[tuple[str, str], list[str]] = {}
    for path in entries:
        if path.is_file():
            kinds.setdefault((path.name.split("_", 1)[0], path.suffix), []).append(path.name)
    listed: list[str] = []
    for path in entries:
        if path.is_dir():
            if path.name == "wandb":
                listed += [f"wandb/{run.name}/" for run in wandb_runs(output_dir)]
            elif any(path.iterdir()):
                listed.append(f"{path.name}/")
            continue
        names = kinds[(path.name.split("_", 1)[0], path.suffix)]
        if len(names) < 3:
            listed.append(path.name)
        elif path.name == names[0]:
            prefix = _shared_prefix(names)
            listed.append(f"{prefix}*{path.suffix} ({len(names)})")
    return sorted(listed, key=lambda item: item != "summary.json")


def _shared_prefix(names: list[str]) -> str:
    """The longest start that all `names` share, cut after its last underscore."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("_") + 1]


def wandb_runs(output_dir: Path) -> list[Path]:
    """The W&B run directories under `<output_dir>/wandb` (offline-run-* or run-*), oldest first."""
    directory = Path(output_dir) / "wandb"
    runs = (
        [p for p in directory.glob("*run-*") if p.is_dir() and not p.is_symlink()]
        if directory.is_dir()
        else []
    )
    return sorted(runs, key=lambda p: p.name.split("-", 2)[-1])


def end_of_run_lines(summary: dict, output_dir: Path) -> list[str]:
    """The lines a run ends with: its result, its files, and how to upload an offline W&B run."""
    lines = [result_line(summary), f"Files in {output_dir}: {', '.join(run_files(output_dir)) or 'none'}"]
    offline = [run for run in wandb_runs(output_dir) if run.name.startswith("offline-run-")]
    if offline:
        lines.append(f"Upload to W&B: wandb sync {offline[-1]}")
    return lines
