"""What a run prints: each line once, no library tips, the result and its files at the end, the
config tree saved in full width and printed only when asked."""

from __future__ import annotations

import logging
import re

import pytest
from omegaconf import OmegaConf

from trainlab.run.console import quiet_library_output, result_line, run_files
from trainlab.utils.printing import print_config_tree

from conftest import QUIET, run_cli

LONG_DIR = "/data/" + "a_rather_long_directory_name/" * 4 + "checkpoints"


def test_result_line_reads_the_best_validation_value_when_the_summary_has_it():
    summary = {
        "status": "completed",
        "metrics": {"test/acc": 0.98412, "val/acc": 0.97, "val/acc_best": 0.9861},
    }
    assert result_line(summary) == "Run completed: test/acc 0.9841 (best val/acc 0.9861)"
    summary["metrics"]["best_epoch"] = 12
    assert result_line(summary) == "Run completed: test/acc 0.9841 (best val/acc 0.9861 at epoch 12)"


def test_result_line_falls_back_to_what_the_summary_has():
    assert (
        result_line({"status": "completed", "metrics": {"test/acc": 0.95, "val/acc": 0.9653}})
        == "Run completed: test/acc 0.95 (val/acc 0.9653 at the last epoch)"
    )
    assert (
        result_line({"status": "completed", "metrics": {"val/loss": 0.25}}) == "Run completed: val/loss 0.25"
    )
    failed = {"status": "failed", "metrics": {}, "error": "ConfigError: data.classes=[]\ntraceback"}
    assert result_line(failed) == "Run failed — ConfigError: data.classes=[]"


def test_run_files_lists_only_what_exists(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()  # created, but no checkpoint written
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch\n")
    (tmp_path / ".hydra").mkdir()
    for stat in ("act_mean", "act_std", "dead"):
        (tmp_path / f"layer_stats_{stat}.png").write_bytes(b"")
    (tmp_path / "layer_stats.csv").write_text("")
    (tmp_path / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    assert run_files(tmp_path) == [
        "summary.json",
        "csv/",
        "layer_stats.csv",
        "layer_stats_*.png (3)",
        "wandb/offline-run-20260101_000000-abc/",
    ]
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert "checkpoints/" in run_files(tmp_path)


def test_config_tree_is_saved_in_full_width_and_printed_only_when_asked(tmp_path, capsys):
    cfg = OmegaConf.create({"callbacks": {"model_checkpoint": {"dirpath": LONG_DIR}}, "seed": 1})
    print_config_tree(cfg, save_to=tmp_path / "config_tree.log")
    assert capsys.readouterr().out == ""
    saved = (tmp_path / "config_tree.log").read_text()
    assert f"dirpath: {LONG_DIR}" in saved  # one line, not cut at 80 columns
    assert all(line == line.rstrip() for line in saved.splitlines())
    cfg.print_config = True
    print_config_tree(cfg, save_to=tmp_path / "config_tree.log")
    assert "model_checkpoint" in capsys.readouterr().out


def test_lightning_tips_are_dropped_and_its_other_lines_kept():
    quiet_library_output()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")

    def passes(message: str) -> bool:
        return rank_zero.filter(
            rank_zero.makeRecord(rank_zero.name, logging.INFO, "x", 1, message, None, None)
        )

    assert not passes(
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
    )
    assert passes("GPU available: False, used: False")


@pytest.mark.slow
def test_a_run_prints_each_line_once_and_ends_with_its_result(tmp_path):
    result = run_cli(
        "trainlab.train",
        "data=digits",
        "model=mlp",
        "trainer.max_epochs=1",
        "data.train_size=200",
        "logger=csv",
        *QUIET,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Tip" not in output and "litlogger" not in output
    # Hydra's job logging prints every log line on stdout, `[time][logger][LEVEL] - message`
    messages = re.findall(r"^\[[^]]+\]\[[^]]+\]\[[A-Z]+\] - (.*)$", result.stdout, flags=re.M)
    assert "Seed set to 42" in messages
    assert [m for m in messages if m in result.stderr] == []  # not printed a second time
    assert len(messages) == len(set(messages))
    assert "CONFIG" not in output  # the tree is saved, not printed
    assert "checkpoints" in (tmp_path / "run" / "config_tree.log").read_text()
    assert re.search(
        r"^Run completed: test/acc [0-9.]+ \(best val/acc [0-9.]+ at epoch \d+\)$", "\n".join(messages), re.M
    )
    files = next(m for m in messages if m.startswith("Files in "))
    assert files.endswith(
        "summary.json, checkpoints/, config_tree.log, confusion_matrix.csv, csv/, layer_stats.csv, "
        "layer_stats_*.png (9), per_class_acc.csv, train.log"
    )


@pytest.mark.parametrize(("offline", "silent"), [(True, True), (False, False)])
def test_wandb_banners_are_silenced_offline_only(monkeypatch, tmp_path, offline, silent):
    from trainlab.tracking.loggers import wandb_logger

    monkeypatch.delenv("WANDB_SILENT", raising=False)
    logger = wandb_logger(offline=offline, project="trainlab", save_dir=str(tmp_path))
    assert bool(logger._wandb_init["settings"].silent) is silent  # the run is not started here
