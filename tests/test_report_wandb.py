"""The study report as a W&B run: numbers stay numbers, and it goes to the jobs' W&B project."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from trainlab.report.collect import DEFAULT, load_jobs, typed_settings
from trainlab.report.write import write_report

from conftest import wait_for_wandb_exit, wandb_history, wandb_records


def job(root: Path, num: int, overrides: list[str], acc: float, project: str | None = "my-study") -> Path:
    path = root / str(num)
    (path / ".hydra").mkdir(parents=True)
    logger = {"csv": {"_target_": "x"}} | ({"wandb": {"project": project, "entity": None}} if project else {})
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": logger, "seed": 42}))
    summary = {
        "status": "completed",
        "overrides": overrides,
        "metrics": {"test/acc": acc},
        "wall_time_s": 1.5,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_numeric_settings_become_numbers_and_option_names_stay_strings(tmp_path):
    job(tmp_path, 0, ["init=xavier_normal", "seed=1", "optimizer.lr=0.1", "tags=[a,b]"], 0.9)
    job(tmp_path, 1, ["init=orthogonal", "seed=2", "optimizer.lr=1e-3", "tags=[a,b]"], 0.8)
    job(tmp_path, 2, ["init=orthogonal", "optimizer.lr=0.5", "tags=[a,b]"], 0.7)
    jobs = load_jobs(tmp_path)
    assert jobs["seed"].tolist() == ["1", "2", DEFAULT]  # the text report keeps strings
    typed = typed_settings(jobs)
    assert typed["seed"].tolist() == [1, 2, None] and all(type(v) is int for v in typed["seed"][:2])
    assert typed["optimizer.lr"].tolist() == [0.1, 0.001, 0.5]
    assert typed["init"].tolist() == ["xavier_normal", "orthogonal", "orthogonal"]
    assert typed["tags"].tolist() == ["[a,b]"] * 3


def test_report_run_has_a_typed_table_in_the_jobs_project(tmp_path):
    job(tmp_path, 0, ["init=xavier_normal", "seed=1", "optimizer.lr=0.1"], 0.9)
    job(tmp_path, 1, ["init=orthogonal", "seed=2", "optimizer.lr=0.01"], 0.8)
    job(tmp_path, 2, ["init=orthogonal", "seed=3", "optimizer.lr=0.01"], 0.85, project=None)  # logger=csv
    write_report(tmp_path, log_to_wandb=True)
    wait_for_wandb_exit(tmp_path)

    (run,) = [r.run for r in wandb_records(tmp_path) if r.WhichOneof("record_type") == "run"]
    assert run.project == "my-study" and run.job_type == "report"
    entry = next(row["report/table"] for row in wandb_history(tmp_path) if "report/table" in row)
    (table_file,) = (tmp_path / "wandb").glob(f"offline-run-*/files/{entry['path']}")
    table = json.loads(table_file.read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["seed"] for r in rows] == [1, 2, 3]
    assert [r["optimizer.lr"] for r in rows] == [0.1, 0.01, 0.01]
    assert [r["init"] for r in rows] == ["xavier_normal", "orthogonal", "orthogonal"]
    assert [r["test/acc"] for r in rows] == [0.9, 0.8, 0.85] and rows[0]["wall_time_s"] == 1.5
