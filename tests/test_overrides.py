"""Override strings are read by one parser, the same way by every report and the study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainlab.report.collect import load_jobs
from trainlab.report.yosinski import collect_runs
from trainlab.utils.overrides import Override, override_values, parse_override


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optimizer.lr=0.10", Override("optimizer.lr", "0.10")),  # the text as typed
        ("+study.kind=AnB+", Override("study.kind", "AnB+", "+")),
        ("++model.pretrained_ckpt='/a=b/c.ckpt'", Override("model.pretrained_ckpt", "'/a=b/c.ckpt'", "++")),
        ("~callbacks.layer_stats", Override("callbacks.layer_stats", None, "~")),
        ("data.classes=[0,1]", Override("data.classes", "[0,1]")),
        ("norm=", Override("norm", "")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_sweeps_and_values():
    assert parse_override("optimizer.lr=0.1,0.01").is_sweep
    assert not parse_override("data.classes=[0,1]").is_sweep and not parse_override("~seed").is_sweep
    assert override_values(["seed=1", "~logger", "++seed=2", "init=fixup"]) == {"seed": "2", "init": "fixup"}


def write_job(root: Path, name: str, overrides: list[str], summary: str | None) -> None:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        (job / "summary.json").write_text(summary)


def test_the_yosinski_table_is_a_view_of_the_study_report_jobs(tmp_path):
    """Prefixed overrides, a corrupt summary.json and a job that left none: the Yosinski table
    lists every job as the study report does (it used to read summary.json files of its own)."""
    ok = {"status": "completed", "metrics": {"test/acc": 0.9, "val/acc": 0.8}}
    write_job(tmp_path, "baseB_seed3", ["+study.kind=baseB", "study.n=0", "seed=3"], None)
    (tmp_path / "baseB_seed3" / "summary.json").write_text(
        json.dumps({**ok, "overrides": ["+study.kind=baseB", "study.n=0", "seed=3"]})
    )
    write_job(tmp_path, "AnB_n1_seed3", ["study.kind=AnB", "study.n=1", "seed=3"], '{"status": "compl')
    write_job(tmp_path, "BnB_n2_seed3", ["study.kind=BnB", "++study.n=2", "seed=3"], None)
    jobs = load_jobs(tmp_path).set_index("job")
    runs = collect_runs(tmp_path).set_index("job")
    assert sorted(runs.index) == sorted(jobs.index)
    for job in jobs.index:
        assert runs.at[job, "kind"] == jobs.at[job, "study.kind"]
        assert runs.at[job, "status"] == jobs.at[job, "status"]
        assert runs.at[job, "n"] == int(jobs.at[job, "study.n"]) and runs.at[job, "seed"] == 3
    assert runs.at["baseB_seed3", "test_acc"] == 0.9 and runs.at["baseB_seed3", "status"] == "completed"
    assert runs.at["AnB_n1_seed3", "status"] == "failed"  # corrupt summary.json
    assert runs.at["BnB_n2_seed3", "status"] == "missing" and runs.at["BnB_n2_seed3", "n"] == 2
