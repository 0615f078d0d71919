"""Yosinski et al. (2014), "How transferable are features in deep neural networks?", in one command:

    python -m trainlab.studies.yosinski [overrides]      # e.g. model=timm model.name=test_resnet

Hydra runs the jobs of a multirun independently, but here the transfer runs need the base
networks' checkpoints. So this driver runs the study as a sequence of Hydra multiruns of
trainlab's training (the same jobs `python -m trainlab.train -m ...` runs), all in one sweep
directory, `logs/yosinski/multiruns/<time>/`, each job in its own sub-directory:

1. `baseA_seed<s>`: trained on task A (`study.classes_a`, all of A's training split);
   `baseB_seed<s>`: trained on task B (`study.classes_b`, `study.b_train_size` examples);
2. for each kind, a multirun over the depths n (`study.depths`, default every backbone stage):
   `AnB_n<n>_seed<s>` (`transfer=partial`, first n stages of baseA loaded and frozen),
   `AnB+_n<n>_...` (`transfer=finetune`, loaded, everything trains), `BnB`, `BnB+` (from baseB).
   Stages past n and the head keep their initialisation and train on B's small training set.
3. the report (trainlab.report.yosinski): yosinski.md / .csv / .png in the study directory, and
   logged to W&B (a `report` run in the study's group) when the W&B logger is on.

Every job shares the study's W&B group and records `study.kind` and `study.n` in its config.
The overrides given here apply to every job; the keys the study sets itself (data.classes,
transfer, seed, ...) are set through `study.*` instead (conf/experiment/yosinski_transfer.yaml).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from trainlab import CONFIG_DIR
from trainlab.utils.config import ConfigError
from trainlab.utils.overrides import command_line, parse_override
from trainlab.utils.resolvers import register as register_resolvers
from trainlab.utils.resolvers import timestamp

EXPERIMENT = "experiment=yosinski_transfer"
KINDS = ("AnB", "AnB+", "BnB", "BnB+")
# keys each job gets from the study; the user sets them through study.* (or not at all)
STUDY_KEYS = {
    "data.classes": "study.classes_a / study.classes_b",
    "data.train_size": "study.b_train_size",
    "trainer.max_epochs": "study.base_epochs / study.transfer_epochs",
    "transfer": "study.kinds",
    "transfer.freeze_depth": "study.depths",
    "transfer.pretrained": None,
    "transfer.pretrained_file": None,
    "transfer.pretrained_ckpt": None,
    "transfer.pretrained_depth": "study.depths",
    # their deprecated names (trainlab.transfer.aliases)
    "model.pretrained": None,
    "model.pretrained_file": None,
    "model.pretrained_ckpt": None,
    "model.pretrained_depth": "study.depths",
    "seed": "study.seeds",
    "study.kind": None,
    "study.n": "study.depths",
    "experiment": None,
    "hydra.sweep.dir": None,
    "hydra.sweep.subdir": None,
}


class StudyError(RuntimeError):
    """A step of the study that the next steps cannot do without (a base network) failed."""


def check_overrides(overrides: Sequence[str]) -> None:
    for override in overrides:
        parsed = parse_override(override)
        if parsed.key in STUDY_KEYS:
            instead = STUDY_KEYS[parsed.key]
            hint = f"set {instead} instead" if instead else "the study sets it for each run"
            raise ConfigError(f"{override!r}: {hint} (conf/experiment/yosinski_transfer.yaml).")
        if parsed.is_sweep:
            raise ConfigError(
                f"{override!r}: the study is one set of settings; sweeps are not supported here."
            )


def compose_study(overrides: Sequence[str]) -> DictConfig:
    """The config of the study's runs (experiment=yosinski_transfer + the overrides)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[EXPERIMENT, *overrides])
    GlobalHydra.instance().clear()
    kinds = list(cfg.study.kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"study.kinds={kinds}: choose among {list(KINDS)}.")
    if set(cfg.study.classes_a) & set(cfg.study.classes_b):
        raise ConfigError("study.classes_a and study.classes_b must not share classes.")
    return cfg


def _train_job(cfg: DictConfig) -> None:
    from trainlab.train import train

    train(cfg)


def run_multirun(overrides: list[str]) -> None:
    """`python -m trainlab.train -m <overrides>`, run in this process (no re-import per step)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    app = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")(_train_job)
    GlobalHydra.instance().clear()
    print("  python -m trainlab.train -m " + " ".join(shlex.quote(o) for o in overrides), flush=True)
    try:
        with command_line(["--multirun", *overrides], program="trainlab"):
            app()
    except SystemExit as exit:  # Hydra reports a failure that stopped the multirun and exits
        if exit.code not in (None, 0):
            print(f"  the multirun stopped with an error (exit code {exit.code})", flush=True)
    finally:
        GlobalHydra.instance().clear()
        root.handlers[:], root.level = handlers, level  # Hydra pointed logging at the last job's file


def base_checkpoint(job_dir: Path) -> Path:
    """The best checkpoint of a completed base run (by val/acc), or its last one."""
    summary_path = job_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("status") != "completed":
        raise StudyError(
            f"The base run {job_dir} did not complete ({summary.get('status', 'no summary.json')}: "
            f"{summary.get('error')}); the transfer runs need it."
        )
    best = summary.get("best_checkpoint")
    path = Path(best) if best else job_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise StudyError(f"The base run {job_dir} left no checkpoint at {path}.")
    return path


def stage_count(checkpoint: Path) -> int:
    from trainlab.layers.stages import split_network
    from trainlab.models.classifier import Classifier

    return len(split_network(Classifier.load_from_checkpoint(checkpoint, map_location="cpu").net).stages)


def _listing(values: Sequence) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def run_study(overrides: Sequence[str] = ()) -> Path:
    """Run the whole study; return its directory (which holds the report)."""
    overrides = list(overrides)
    check_overrides(overrides)
    cfg = compose_study(overrides)
    study = cfg.study
    study_dir = (Path(cfg.paths.log_dir) / cfg.task_name / "multiruns" / timestamp()).resolve()
    study_dir.mkdir(parents=True)
    (study_dir / "study.yaml").write_text(OmegaConf.to_yaml({"overrides": overrides, "study": study}))
    print(f"Yosinski transfer study in {study_dir}", flush=True)
    common = [EXPERIMENT, *overrides, f"hydra.sweep.dir={study_dir}"]
    b_size = "null" if study.b_train_size is None else study.b_train_size
    b_data = [f"data.classes={_listing(study.classes_b)}", f"data.train_size={b_size}"]
    for seed in study.seeds:
        bases = {}
        for task, data, epochs in (
            ("A", [f"data.classes={_listing(study.classes_a)}", "data.train_size=null"], study.base_epochs),
            ("B", b_data, study.transfer_epochs),
        ):
            job = f"base{task}_seed{seed}"
            print(f"[seed {seed}] base{task}: trained on task {task}", flush=True)
            run_multirun(
                [
                    *common,
                    f"study.kind=base{task}",
                    "study.n=0",
                    *data,
                    f"trainer.max_epochs={epochs}",
                    f"seed={seed}",
                    f"hydra.sweep.subdir={job}",
                ]
            )
            bases[task] = base_checkpoint(study_dir / job)
        depths = list(study.depths or range(1, stage_count(bases["A"]) + 1))
        for kind in study.kinds:
            frozen = not kind.endswith("+")
            policy = (
                ["transfer=partial", "transfer.freeze_depth=${study.n}"] if frozen else ["transfer=finetune"]
            )
            print(f"[seed {seed}] {kind} for n in {depths}", flush=True)
            run_multirun(
                [
                    *common,
                    f"study.kind={kind}",
                    "study.n=" + ",".join(str(n) for n in depths),
                    *b_data,
                    f"trainer.max_epochs={study.transfer_epochs}",
                    *policy,
                    f"transfer.pretrained_ckpt='{bases[kind[0]]}'",
                    "transfer.pretrained_depth=${study.n}",
                    f"seed={seed}",
                    f"hydra.sweep.subdir={kind}_n${{study.n}}_seed{seed}",
                ]
            )
    report_study(study_dir, cfg)
    return study_dir


def report_study(study_dir: Path, cfg: DictConfig) -> None:
    from trainlab.report.yosinski import log_to_wandb, write_report

    report = write_report(study_dir)
    print("\n" + report.markdown(), flush=True)
    print(f"Report: {report.files['md']}, {report.files['csv']}, {report.files['png']}", flush=True)
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg:
        from trainlab.tracking.loggers import wandb_logged_in

        offline = wandb_cfg.get("offline")
        offline = not wandb_logged_in() if offline is None else offline
        run_dir = log_to_wandb(
            report,
            project=wandb_cfg.get("project"),
            entity=wandb_cfg.get("entity"),
            group=f"{cfg.task_name}-{study_dir.name}",
            name=f"yosinski-report-{study_dir.name}",
            dir=str(study_dir),
            mode="offline" if offline else "online",
            config={"study": OmegaConf.to_container(cfg.study, resolve=True)},
        )
        if offline:
            print(f"W&B (offline): wandb sync {Path(run_dir).parent}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        run_study(sys.argv[1:] if argv is None else argv)
    except (ConfigError, StudyError) as error:
        sys.exit(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
