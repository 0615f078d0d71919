"""A catalogue of bad inputs, each run through the real entry point: is each one a clear error before training?

    python scripts/bad_inputs.py                     # every case; a table and the totals
    python scripts/bad_inputs.py --only classes seed # the cases whose label contains a word
    python scripts/bad_inputs.py --json bad_inputs.json

Each case is a set of command-line overrides with a short label. It is composed as
`python -m trainlab.train <overrides>` would compose it (trainlab.utils.compose.compose_run_config),
on top of tiny settings (8x8 digits, a small MLP, one epoch, CSV logger), and trained in this
process with trainlab.train.train. A few cases take another entry point (`Case.entry`):
`lr_find` (trainlab.lr_find.lr_find), `sweeper` (the multirun's sweeper built as Hydra builds
it), `report` (`python -m trainlab.report` on a study with one job's summary.json replaced by
the case's `summary`) and `cli` (`python -m trainlab.train` in a subprocess, in a folder of its
own: a directory made outside it counts as an error in training). The outcome is one of:

- `clear error`: an exception before the first training step (at composition, or with
  summary.json's global_step 0) whose message names the setting;
- `unclear error`: an exception before the first step whose message does not name it;
- `error in training`: an exception after training started;
- `warned`: the run completed, with a warning that names the setting (a legal setting);
- `silent`: the run completed, and nothing named the setting.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trainlab.utils.overrides import parse_override  # noqa: E402  (from the clone's src)

# Tiny and quiet: what every case starts from (its own overrides come after, and win).
TINY = [
    "data=digits",
    "model=mlp",
    "model.depth=1",
    "model.width=16",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null",
    "callbacks.layer_stats=null",
    "callbacks.augment_preview=null",
    "num_threads=1",
]
CLEAR, UNCLEAR, IN_TRAINING, WARNED, SILENT = (
    "clear error",
    "unclear error",
    "error in training",
    "warned",
    "silent",
)
OUTCOMES = (CLEAR, UNCLEAR, IN_TRAINING, WARNED, SILENT)


@dataclass
class Case:
    label: str
    overrides: list[str]
    names: list[str] = field(default_factory=list)  # what the message must name; default: the keys
    env: dict[str, str] = field(default_factory=dict)
    entry: str = "train"  # train | lr_find | sweeper | report | cli (see the module's docstring)
    hide: list[str] = field(default_factory=list)  # modules made unimportable (a missing extra)
    summary: dict = field(default_factory=dict)  # report: the fields one job's summary.json gets


def blur(transform: str) -> str:
    return f"augment.transforms=[{transform}]"


def cases(files: dict[str, str]) -> list[Case]:
    """The catalogue, by config group. `{name}` in an override is one of `files` (made by fixtures)."""
    c = Case
    rows = [
        # --- data ---------------------------------------------------------------------------
        c("unknown data option", ["data=imagenet"], ["data/imagenet"]),
        c("batch size not a number", ["data.batch_size=abc"]),
        c("batch size 0", ["data.batch_size=0"]),
        c("negative batch size", ["data.batch_size=-8"]),
        c("typo in a data key", ["data.batchsize=32"], ["batchsize"]),
        c("classes: empty list", ["data.classes=[]"]),
        c("classes: one class", ["data.classes=[3]"]),
        c("classes: repeated", ["data.classes=[1,1]"]),
        c("classes: out of range", ["data.classes=[0,10]"]),
        c("classes: not integers", ["data.classes=[a,b]"]),
        c("train_size below the class count", ["data.train_size=3"]),
        c("train_size 0", ["data.train_size=0"]),
        c("train_size above the data", ["data.train_size=100000"]),
        c("train_size a fraction", ["data.train_size=0.5"]),
        c("val_fraction 0", ["data.val_fraction=0"]),
        c("val_fraction above 1", ["data.val_fraction=1.5"]),
        c("val split smaller than the classes", ["data.val_fraction=0.001"]),
        c("test split smaller than the classes", ["data.test_fraction=0.001"]),
        c("negative num_workers", ["data.num_workers=-1"]),
        c("split_seed not a number", ["data.split_seed=abc"]),
        c("folder: root not set", ["data=folder"], ["data.source.root"]),
        c("folder: root missing", ["data=folder", "data.source.root=/nowhere/images"]),
        c("folder: no images", ["data=folder", "data.source.root={empty}"]),
        c("folder: one class", ["data=folder", "data.source.root={one_class}"]),
        c(
            "folder: a corrupt image",
            ["data=folder", "data.source.root={corrupt}", "data.source.image_size=8"],
        ),
        c("folder: 2 channels", ["data=folder", "data.source.root={two_class}", "data.source.channels=2"]),
        c(
            "mnist not on disk, no download",
            ["data=mnist", "data.source.root={empty}", "data.source.download=false"],
        ),
        # --- model --------------------------------------------------------------------------
        c("unknown model option", ["model=transformer"], ["model/transformer"]),
        c("depth not an integer", ["model.depth=2.5"]),
        c("negative depth", ["model.depth=-1"]),
        c("width 0", ["model.width=0"]),
        c("argument the model lacks", ["+model.dropout_rate=0.1"], ["model.dropout_rate"]),
        c("dropout not a probability", ["model.dropout=1.5"], ["model.dropout"]),
        c("unknown timm model", ["model=timm", "model.name=resnet18x"], ["model.name"]),
        c(
            "hub weights offline",
            ["model=timm", "model.name=resnet18", "transfer.pretrained=true", "transfer=finetune"],
        ),
        c(
            "pretrained_file missing",
            [
                "model=timm",
                "model.name=test_resnet",
                "transfer.pretrained_file=/nowhere.pth",
                "transfer=finetune",
            ],
            ["transfer.pretrained_file"],
        ),
        c(
            "pretrained_file of another network",
            [
                "model=timm",
                "model.name=test_resnet",
                "transfer.pretrained_file={other_weights}",
                "transfer=finetune",
            ],
            ["transfer.pretrained_file"],
        ),
        c(
            "pretrained_ckpt missing",
            ["transfer.pretrained_ckpt=/nowhere.ckpt", "transfer=finetune"],
            ["transfer.pretrained_ckpt"],
        ),
        c("weights with transfer=scratch", ["transfer.pretrained_ckpt=/nowhere.ckpt"], ["transfer=scratch"]),
        # --- init ---------------------------------------------------------------------------
        c("unknown init option", ["init=kaiming"], ["init/kaiming"]),
        c("fixup on a net without residuals", ["init=fixup"], ["init=fixup"]),
        c("negative std", ["init=normal", "init.std=-0.1"]),
        c("kaiming with fan_avg", ["init=kaiming_normal", "init.mode=fan_avg"]),
        c("negative uniform bound", ["init=uniform", "init.a=-1"]),
        c("constant value not a number", ["init=constant", "init.value=abc"]),
        c("bias not a number", ["init.bias=abc"]),
        # --- norm ---------------------------------------------------------------------------
        c("unknown norm option", ["norm=layer_norm"], ["norm/layer_norm"]),
        c("groups not dividing the channels", ["model=cnn", "norm=groupnorm", "norm.groups=3"]),
        c(
            "ghost batch not dividing the last batch",
            ["norm=ghost_batchnorm", "data.train_size=1000", "data.batch_size=64"],
            ["norm.virtual_batch_size"],
        ),
        c("ghost batch size 0", ["norm=ghost_batchnorm", "norm.virtual_batch_size=0"]),
        c("instancenorm on vectors", ["norm=instancenorm"], ["norm=instancenorm"]),
        c("momentum not a number", ["norm=batchnorm_scratch", "norm.momentum=fast"]),
        c("unknown norm position", ["norm.position=middle"]),
        # --- activation ---------------------------------------------------------------------
        c("unknown activation option", ["activation=swish"], ["activation/swish"]),
        c("negative_slope not a number", ["activation=leaky_relu", "activation.negative_slope=abc"]),
        c("maxout with 0 pieces", ["activation=maxout", "activation.pieces=0"]),
        # --- augment ------------------------------------------------------------------------
        c("unknown augment option", ["augment=heavy"], ["augment/heavy"]),
        c("reversed noise range", [blur("{_target_:albumentations.GaussNoise,std_range:[0.5,0.1]}")]),
        c("RGB-only transform on grey", [blur("{_target_:albumentations.RandomFog,p:0.2}")]),
        c("transform name typo", [blur("{_target_:albumentations.Flipp}")]),
        c("argument the transform lacks", [blur("{_target_:albumentations.GaussNoise,std:0.1}")]),
        c("even GaussianBlur kernel", [blur("{_target_:albumentations.GaussianBlur,blur_limit:[4,4]}")]),
        c("reversed Blur kernel range", [blur("{_target_:albumentations.Blur,blur_limit:[4,2]}")]),
        c("crop larger than the image", [blur("{_target_:albumentations.RandomCrop,height:32,width:32}")]),
        c("unknown augment mode", ["augment=basic", "augment.mode=sometimes"]),
        c("offline copies 0", ["augment=basic", "augment.mode=offline", "augment.copies=0"]),
        c("negative augment seed", ["augment=basic", "augment.seed=-1"]),
        # --- transfer -----------------------------------------------------------------------
        c("unknown transfer option", ["transfer=freeze"], ["transfer/freeze"]),
        c("freeze_depth beyond the stages", ["transfer=partial", "transfer.freeze_depth=5"]),
        # --- optimizer ----------------------------------------------------------------------
        c("unknown optimizer option", ["optimizer=rmsprop"], ["optimizer/rmsprop"]),
        c("lr not a number", ["optimizer.lr=fast"]),
        c("negative lr", ["optimizer.lr=-0.1"]),
        c("negative momentum", ["optimizer=sgd", "optimizer.momentum=-1"]),
        c("weight_decay not a number", ["optimizer.weight_decay=abc"]),
        # --- scheduler ----------------------------------------------------------------------
        c("unknown scheduler option", ["scheduler=onecycle"], ["scheduler/onecycle"]),
        c("warm-up longer than the run", ["scheduler.warmup_steps=100000"]),
        c("negative warm-up", ["scheduler.warmup_steps=-5"]),
        c("min_lr_ratio above 1", ["scheduler.min_lr_ratio=2"]),
        c(
            "milestones as step counts",
            ["scheduler=step", "scheduler.milestones=[50,75]"],
            ["scheduler.milestones"],
        ),
        c("gamma 0", ["scheduler=step", "scheduler.gamma=0"]),
        # --- trainer ------------------------------------------------------------------------
        c("unknown trainer option", ["trainer=tpu"], ["trainer/tpu"]),
        c("max_epochs not a number", ["trainer.max_epochs=abc"]),
        c("max_epochs 0", ["trainer.max_epochs=0"]),
        c("8-bit precision", ["trainer.precision=8"], ["precision"]),
        # --- callbacks ----------------------------------------------------------------------
        c("unknown callbacks option", ["callbacks=fast"], ["callbacks/fast"]),
        c("checkpoint monitor never logged", ["callbacks.model_checkpoint.monitor=val/accuracy"]),
        c(
            "early-stopping monitor never logged",
            ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val_acc"],
        ),
        c("checkpoint mode maximum", ["callbacks.model_checkpoint.mode=maximum"], ["mode"]),
        # --- logger -------------------------------------------------------------------------
        c("unknown logger option", ["logger=mlflow"], ["logger/mlflow"]),
        c(
            "W&B key, no network",
            ["logger=wandb"],
            ["W&B"],
            env={"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{files['closed_port']}"},
        ),
        # --- run ----------------------------------------------------------------------------
        c("seed not a number", ["seed=abc"]),
        c("negative seed", ["seed=-1"]),
        c("checkpoint to resume missing", ["ckpt_path=/nowhere.ckpt"]),
        c("resume with no last.ckpt", ["ckpt_path=last"], ["ckpt_path=last"]),
        c("unknown experiment", ["experiment=imagenet"], ["experiment/imagenet"]),
        c("unknown debug preset", ["debug=fast"], ["debug/fast"]),
        # --- wrong inputs by class (docs/errors.md) --------------------------------------------
        # batch and split sizes against BatchNorm and drop_last
        c("last batch of one under BatchNorm", ["data.batch_size=4"]),  # 1293 = 323 x 4 + 1
        c("every batch of one under BatchNorm", ["data.batch_size=1"]),
        c("batch above the split with drop_last", ["data.batch_size=2000", "data.drop_last=true"]),
        # trainer knobs at 0 or below
        c("accumulate_grad_batches 0", ["trainer.accumulate_grad_batches=0"]),
        c("val_check_interval 0", ["trainer.val_check_interval=0"]),
        c("log_every_n_steps 0", ["trainer.log_every_n_steps=0"]),
        c("check_val_every_n_epoch 0", ["trainer.check_val_every_n_epoch=0"]),
        c("max_epochs below -1", ["trainer.max_epochs=-2"]),
        c("negative limit_train_batches", ["+trainer.limit_train_batches=-1"]),
        c("negative gradient clip", ["trainer.gradient_clip_val=-1"]),
        c("lr_find with 0 steps", ["+lr_find.num_training=0"], entry="lr_find"),
        # list lengths
        c("betas too short", ["+optimizer.betas=[0.9]"]),
        c("betas too long", ["optimizer=adamw", "+optimizer.betas=[0.9,0.99,0.999]"]),
        # weight files that cannot be read
        c(
            "pretrained_file empty",
            [
                "model=timm",
                "model.name=test_resnet",
                "transfer.pretrained_file={empty_file}",
                "transfer=finetune",
            ],
            ["transfer.pretrained_file"],
        ),
        # user config files that fail to parse
        c(
            "YAML syntax error in a user config",
            ["hydra.searchpath=[file://{broken_yaml}]", "experiment=mine"],
            ["{broken_yaml}/experiment/mine.yaml"],
        ),
        c(
            "broken interpolation in a user config",
            ["hydra.searchpath=[file://{broken_interpolation}]", "experiment=mine"],
            ["{broken_interpolation}/experiment/mine.yaml"],
        ),
        # names that leave logs/
        c("task_name leaving logs/", ["task_name=../../outside"], ["task_name='../../outside'"], entry="cli"),
        c("absolute task_name", ["task_name=/tmp/outside"], ["task_name='/tmp/outside'"]),
        # wrong-typed summaries in a study report
        c("summary metrics a string", [], ["`metrics`"], entry="report", summary={"metrics": "high"}),
        c("summary step a string", [], ["`global_step`"], entry="report", summary={"global_step": "ten"}),
        # missing extras
        c(
            "search without optuna",
            ["hparams_search=optuna"],
            ["trainlab[search]"],
            entry="sweeper",
            hide=["optuna"],
        ),
        # likely mistakes: warned about (a legal setting) or refused
        c("linear probe of a random backbone", ["transfer=linear_probe"], ["transfer=linear_probe"]),
        c("lr 0", ["optimizer.lr=0"]),
    ]
    for row in rows:
        for name, value in files.items():
            row.overrides = [o.replace(f"{{{name}}}", value) for o in row.overrides]
            row.names = [n.replace(f"{{{name}}}", value) for n in row.names]
    return rows


def default_names(overrides: list[str]) -> list[str]:
    """What the message should name: `a.b` for `a.b=v`; for a top-level key or a config group, the
    key followed by `=` (`seed='abc'`, `init=fixup`) or `/` (Hydra's `Could not find 'data/x'`)."""
    names = []
    for override in overrides:
        key = parse_override(override).key
        names += [key] if "." in key else [f"{key}=", f"{key}/"]
    return names


def run_overrides(case_overrides: list[str]) -> list[str]:
    """TINY, less what the case replaces: the same keys, and the keys of a group it chooses anew
    (model=timm has no model.depth)."""
    keys = {parse_override(o).key for o in case_overrides}
    groups = {k for k in keys if "." not in k}
    kept = [
        o
        for o in TINY
        if (key := parse_override(o).key) not in keys and key.partition(".")[0] not in groups - {"callbacks"}
    ]
    return [*kept, *case_overrides]


# --- fixtures ---------------------------------------------------------------------------------


def make_files(root: Path) -> dict[str, str]:
    import numpy as np
    import timm
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)

    def image_folder(name: str, classes: list[str]) -> Path:
        for label in classes:
            (root / name / label).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    root / name / label / f"{i}.png"
                )
        return root / name

    corrupt = image_folder("corrupt", ["a", "b"])
    (corrupt / "b" / "3.png").write_bytes(b"not an image")
    (root / "empty").mkdir()
    weights = {f"encoder.{k}": v for k, v in timm.create_model("test_resnet").state_dict().items()}
    torch.save(weights, root / "other.pth")
    (root / "empty.pth").write_bytes(b"")  # a copy that failed

    def user_folder(name: str, text: str) -> str:
        (root / name / "experiment").mkdir(parents=True)
        (root / name / "experiment" / "mine.yaml").write_text("# @package _global_\n" + text)
        return str(root / name)

    with socket.socket() as probe:  # a local port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    return {
        "one_class": str(image_folder("one_class", ["cats"])),
        "two_class": str(image_folder("two_class", ["cats", "dogs"])),
        "corrupt": str(corrupt),
        "empty": str(root / "empty"),
        "other_weights": str(root / "other.pth"),
        "closed_port": str(closed_port),
        "empty_file": str(root / "empty.pth"),
        "broken_yaml": user_folder("broken_yaml", "model:\n  width: [16\n  depth: 1\n"),
        "broken_interpolation": user_folder("broken_interpolation", "model:\n  width: ${model.depth\n"),
    }


# --- running one case -------------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _message(error: BaseException) -> str:
    """The error's message and those of its causes (Hydra wraps what a target raises)."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- ".join(parts)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    if values:
        os.environ.pop("WANDB_MODE", None)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ["WANDB_MODE"] = "offline"


@contextlib.contextmanager
def hidden(modules: list[str]):
    """`import <module>` fails inside, as where the module is not installed."""
    saved = {m: sys.modules.get(m) for m in modules}
    sys.modules.update(dict.fromkeys(modules))
    try:
        yield
    finally:
        for module, value in saved.items():
            if value is None:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = value


def run_entry(case: Case, run_dir: Path, root: Path) -> dict:
    """Run the case through its entry point; return the run's summary, or what stands for one."""
    from trainlab.utils.compose import compose_run_config

    overrides = run_overrides(case.overrides)
    if case.entry == "report":
        return run_report(case, run_dir)
    if case.entry == "cli":
        return run_cli(overrides, run_dir)
    cfg = compose_run_config(overrides, run_dir, log_dir=root)
    if case.entry == "lr_find":
        from trainlab.lr_find import lr_find

        return {"status": "completed", "suggestion": lr_find(cfg)["suggestion"]}
    if case.entry == "sweeper":
        from hydra.core.plugins import Plugins

        Plugins.instance()._instantiate(cfg.hydra.sweeper)  # as Hydra builds it for a multirun
        return {"status": "sweeper built"}
    from trainlab.train import train

    return train(cfg)


def run_report(case: Case, study: Path) -> dict:
    """`python -m trainlab.report` on a study of three jobs, the last one's summary.json holding
    `case.summary`: a clear error is that job listed `failed`, its error naming the field."""
    from trainlab.report.__main__ import main as report
    from trainlab.report.collect import load_jobs

    for job, seed in enumerate((1, 2, 3)):
        (study / str(job) / ".hydra").mkdir(parents=True)
        (study / str(job) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        summary = {"status": "completed", "metrics": {"val/acc": 0.9}, "overrides": [f"seed={seed}"]}
        summary.update(case.summary if job == 2 else {})
        (study / str(job) / "summary.json").write_text(json.dumps(summary))
    report([str(study)])
    bad = load_jobs(study).set_index("job").loc["2"]
    if bad["status"] == "failed":
        raise ReportedFailure(bad["error"])
    return {"status": f"report written, the job {bad['status']}"}


class ReportedFailure(Exception):
    """The report listed the job as failed, with this error."""


def run_cli(overrides: list[str], folder: Path) -> dict:
    """`python -m trainlab.train` in `folder/project`; anything it makes beside that folder is an
    error in training (a file system change outside the project)."""
    import subprocess

    project = folder / "project"
    project.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "trainlab.train", *overrides],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outside = [p for p in folder.iterdir() if p != project]
    if outside:
        raise RuntimeError(f"made {', '.join(map(str, outside))} outside the project: {result.stderr[-300:]}")
    if result.returncode:  # its last lines: Hydra prints a traceback, then the error and its key
        raise RuntimeError(" ".join(result.stderr.strip().splitlines()[-4:]) or "no message")
    return {"status": "completed (cli)"}


def run_case(case: Case, root: Path, index: int) -> dict:
    from hydra.core.global_hydra import GlobalHydra

    run_dir = root / f"case{index:03d}"
    names = case.names or default_names(case.overrides)
    collect = Collect()
    logging.getLogger().addHandler(collect)
    start = time.monotonic()
    step, message, stage = 0, "", "compose"
    try:
        with (
            environment(case.env),
            hidden(case.hide),
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("always")
            stage = case.entry
            summary = run_entry(case, run_dir, root)
        step = int(summary.get("global_step") or 0)
        outcome = SILENT
        said = [m for m in collect.messages + [str(w.message) for w in caught] if any(n in m for n in names)]
        if said:
            outcome, message = WARNED, said[0]
        else:
            message = f"completed: {summary.get('status')}, global_step {step}, " + ", ".join(
                f"{k}={v:.3f}" for k, v in (summary.get("metrics") or {}).items() if k.endswith("acc")
            )
    except BaseException as error:  # every failure is classified, whatever its type
        if isinstance(error, KeyboardInterrupt):
            raise
        message = _message(error)
        summary_file = run_dir / "summary.json"
        if summary_file.is_file():
            step = int(json.loads(summary_file.read_text()).get("global_step") or 0)
        named = any(n in message for n in names)
        outside = "outside the project" in message  # a cli case made something beside its folder
        outcome = IN_TRAINING if step > 0 or outside else CLEAR if named else UNCLEAR
    finally:
        logging.getLogger().removeHandler(collect)
        GlobalHydra.instance().clear()
    return {
        "label": case.label,
        "overrides": case.overrides,
        "outcome": outcome,
        "stage": stage,
        "global_step": step,
        "names": names,
        "message": " ".join(message.split())[:600],
        "seconds": round(time.monotonic() - start, 2),
    }


def print_table(results: list[dict]) -> None:
    width = max(len(r["label"]) for r in results)
    print(f"{'case':<{width}}  {'outcome':<17}  {'step':>4}  message")
    for r in results:
        print(f"{r['label']:<{width}}  {r['outcome']:<17}  {r['global_step']:>4}  {r['message'][:110]}")
    print()
    totals = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    print(f"{len(results)} cases: " + ", ".join(f"{n} {o}" for o, n in totals.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="*", help="run only the cases whose label contains one of these words"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as folder:
        root = Path(folder)
        catalogue = cases(make_files(root / "files"))
        if args.only:
            catalogue = [c for c in catalogue if any(word in c.label for word in args.only)]
        results = []
        for index, case in enumerate(catalogue):
            results.append(run_case(case, root / "runs", index))
            print(f"[{index + 1}/{len(catalogue)}] {case.label}: {results[-1]['outcome']}", file=sys.stderr)
    print_table(results)
    if args.json:
        totals = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
        args.json.write_text(json.dumps({"totals": totals, "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
