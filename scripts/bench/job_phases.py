"""Where a job's wall time goes: `trainlab.train` run in this process with timers wrapped
around its phases (W&B start and finish, data, model, trainer, sanity check, training,
validation, checkpoint saves, the test, layer-statistics figures, config tree, report).

Used by scripts/bench/study_overhead.py --phases. The timers wrap functions from outside;
nothing in trainlab changes. Times nest: a phase's time includes its sub-phases'.
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections import defaultdict

# (module, attribute path, label): what is timed. A missing attribute is skipped, so the list
# also works for older or newer code.
PHASES = [
    ("hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_sweep_config", "hydra: compose job config"),
    ("hydra.core.utils", "_save_config", "hydra: save .hydra/*.yaml"),
    ("trainlab.train", "train", "job (trainlab.train.train)"),
    ("trainlab.run.summary", "RunSummary.start", "summary.json: start"),
    ("trainlab.utils.printing", "print_config_tree", "config tree"),
    ("trainlab.checks", "check_config", "check config"),
    ("trainlab.checks", "check_batches_fit_network", "check batches against the network's norms"),
    ("trainlab.run.lifecycle", "Run.begin", "lifecycle: begin (lock, linked files, record)"),
    ("trainlab.run.directory", "refuse_linked_files", "lifecycle: linked-file scan"),
    ("trainlab.callbacks.progress", "ThrottledRichProgressBar.teardown", "progress bar teardown"),
    ("trainlab.builders", "build_datamodule", "build datamodule"),
    ("trainlab.builders", "build_model", "build model"),
    ("trainlab.builders", "build_loggers", "build loggers (W&B start)"),
    ("trainlab.builders", "build_callbacks", "build callbacks"),
    ("trainlab.builders", "build_trainer", "build trainer"),
    ("lightning.pytorch.trainer.trainer", "Trainer.fit", "fit"),
    ("lightning.pytorch.trainer.trainer", "Trainer.test", "test (best checkpoint)"),
    ("lightning.pytorch.loops.fit_loop", "_FitLoop.run", "fit: training loop (incl. validation)"),
    ("lightning.pytorch.loops.evaluation_loop", "_EvaluationLoop.run", "validation/test loops"),
    ("lightning.pytorch.trainer.trainer", "Trainer.save_checkpoint", "checkpoint saves"),
    ("lightning.pytorch.callbacks.model_summary", "ModelSummary.on_fit_start", "model summary"),
    ("trainlab.callbacks.layer_stats", "LayerStats.plot", "layer-statistics figures"),
    ("trainlab.tracking.finish", "finish_loggers", "finish loggers"),
    ("lightning.pytorch.trainer.trainer", "Trainer._run_sanity_check", "sanity check"),
    ("lightning.pytorch.trainer.trainer", "Trainer._teardown", "trainer teardown"),
    (
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
        "_CheckpointConnector.restore",
        "checkpoint restore",
    ),
    ("trainlab.run.console", "end_of_run_lines", "end-of-run lines"),
    ("trainlab.run.summary", "RunSummary.write", "summary.json writes"),
    ("trainlab.run.summary", "RunSummary.collect", "summary: collect from callbacks"),
    ("trainlab.run.summary", "RunSummary.record_best", "summary: best checkpoint"),
    ("trainlab.utils.config", "require_values", "config: required values"),
    ("lightning.fabric.utilities.seed", "seed_everything", "seed_everything"),
    ("trainlab.builders", "resolve_checkpoint", "resolve checkpoint"),
    ("trainlab.run.console", "quiet_library_output", "quiet library output"),
    ("trainlab.report.hydra_callback", "MultirunReport.on_multirun_end", "study report"),
]


class PhaseTimer:
    """Accumulates wall seconds per label, per job (a job starts at each trainlab.train.train)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, float]] = []
        self.outside: dict[str, float] = defaultdict(float)  # before the first job, after the last
        self.starts: list[float] = []  # when each job's trainlab.train.train began

    def add(self, label: str, seconds: float) -> None:
        target = self.jobs[-1] if self.jobs and label != "study report" else self.outside
        target[label] = target.get(label, 0.0) + seconds

    def wrap(self, label: str, function):
        timer = self

        @functools.wraps(function)
        def timed(*args, **kwargs):
            if label == "job (trainlab.train.train)":
                timer.jobs.append(defaultdict(float))
                timer.starts.append(time.perf_counter())
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timer.add(label, time.perf_counter() - start)

        return timed

    def install(self) -> None:
        for module_name, path, label in PHASES:
            try:
                owner = importlib.import_module(module_name)
                *parents, name = path.split(".")
                for parent in parents:
                    owner = getattr(owner, parent)
                function = getattr(owner, name)
            except (ImportError, AttributeError):
                print(f"job_phases: {module_name}.{path} not found; not timed", file=sys.stderr)
                continue
            setattr(owner, name, self.wrap(label, function))


def run(overrides: list[str]) -> tuple[PhaseTimer, float]:
    """Run `python -m trainlab.train -m <overrides>` in this process with the timers in place;
    return them and the seconds the whole multirun took (imports and timer set-up included)."""
    start = time.perf_counter()
    timer = PhaseTimer()
    timer.install()
    import trainlab.train

    sys.argv = ["trainlab.train", "-m", *overrides]
    try:
        trainlab.train.main()
    except SystemExit as exit:  # the multirun's verdict: 1 if a job failed
        if exit.code:
            raise
    return timer, time.perf_counter() - start


def table(timer: PhaseTimer) -> list[dict]:
    """One row per phase: its seconds in the first job and the median over the later jobs."""
    import statistics

    labels = [label for _, _, label in PHASES]
    # everything a job costs, Hydra's part included: from its start to the next job's start
    between = [b - a for a, b in zip(timer.starts, timer.starts[1:], strict=False)]
    rows = [
        {
            "phase": "whole job (its start to the next job's start)",
            "first job s": between[0] if between else None,
            "later jobs s": statistics.median(between[1:]) if len(between) > 1 else None,
        }
    ]
    for label in labels:
        per_job = [job.get(label, 0.0) for job in timer.jobs]
        if label in timer.outside:
            rows.append(
                {
                    "phase": f"{label} (outside the jobs)",
                    "first job s": timer.outside[label],
                    "later jobs s": None,
                }
            )
        if not any(per_job):
            continue
        later = statistics.median(per_job[1:]) if len(per_job) > 1 else None
        rows.append({"phase": label, "first job s": per_job[0], "later jobs s": later})
    return rows


if __name__ == "__main__":
    import json

    timer, seconds = run(sys.argv[1:])
    print("JOB_PHASES " + json.dumps({"rows": table(timer), "seconds": seconds, "jobs": len(timer.jobs)}))
