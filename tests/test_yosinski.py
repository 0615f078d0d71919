"""The Yosinski et al. (2014) study: its report, its guard rails and, end to end, its plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from trainlab.report.yosinski import collect_runs, log_to_wandb, write_report
from trainlab.studies import yosinski
from trainlab.transfer import split_network
from trainlab.utils.config import ConfigError


def fake_job(
    study: Path, name: str, kind: str, n: int, seed: int, acc: float, status: str = "completed"
) -> None:
    job = study / name
    job.mkdir(parents=True)
    summary = {
        "status": status,
        "metrics": {"test/acc": acc, "val/acc": acc},
        "seed": seed,
        "overrides": [f"study.kind={kind}", f"study.n={n}", f"seed={seed}"],
    }
    (job / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def fake_study(tmp_path) -> Path:
    study = tmp_path / "study"
    for seed in (0, 1):
        fake_job(study, f"baseA_seed{seed}", "baseA", 0, seed, 0.99)
        fake_job(study, f"baseB_seed{seed}", "baseB", 0, seed, 0.90 + 0.02 * seed)
        for n in (1, 2):
            for kind, acc in (
                ("AnB", 0.9 - 0.1 * n),
                ("AnB+", 0.95),
                ("BnB", 0.91 - 0.05 * n),
                ("BnB+", 0.92),
            ):
                fake_job(study, f"{kind}_n{n}_seed{seed}", kind, n, seed, acc + 0.01 * seed)
    fake_job(study, "AnB_n3_seed0", "AnB", 3, 0, 0.0, status="failed")
    return study


def test_report_table_plot_and_markdown(fake_study):
    report = write_report(fake_study)
    assert all(path.is_file() and path.stat().st_size > 0 for path in report.files.values())
    assert len(report.runs) == 4 + 2 * 2 * 4 + 1  # bases, 4 kinds x 2 depths x 2 seeds, one failed run
    table = report.table  # mean over the two seeds, completed runs only
    assert table.at[0, "baseB"] == pytest.approx(0.91)
    assert table.at[1, "AnB"] == pytest.approx(0.805) and table.at[2, "AnB"] == pytest.approx(0.705)
    assert table.at[2, "BnB+"] == pytest.approx(0.925) and 3 not in table.index
    text = report.markdown()
    assert "| n | baseB | AnB | AnB+ | BnB | BnB+ |" in text and "0.8050 ± 0.0071" in text
    assert "did not complete (1): AnB_n3_seed0" in text and "baseA reaches 0.9900" in text
    csv = (fake_study / "yosinski.csv").read_text().splitlines()
    assert csv[0] == "kind,n,seed,test_acc,val_acc,status,job" and len(csv) == len(report.runs) + 1


def test_report_is_logged_to_wandb_offline(fake_study):
    report = write_report(fake_study)
    run_dir = log_to_wandb(report, project="trainlab-test", group="g", mode="offline", dir=str(fake_study))
    assert Path(run_dir).is_dir() and str(fake_study / "wandb") in run_dir


def test_study_keys_are_set_through_study_settings():
    with pytest.raises(ConfigError, match="data.classes=.*set study.classes_a / study.classes_b instead"):
        yosinski.check_overrides(["data.classes=[0,1]"])
    with pytest.raises(ConfigError, match="transfer=finetune.*set study.kinds instead"):
        yosinski.check_overrides(["transfer=finetune"])
    with pytest.raises(ConfigError, match="sweeps are not supported"):
        yosinski.check_overrides(["optimizer.lr=0.1,0.01"])
    for key in ("transfer.pretrained_ckpt", "model.pretrained_ckpt"):  # the weight sources, old names too
        with pytest.raises(ConfigError, match=f"{key}=x.ckpt.*the study sets it"):
            yosinski.check_overrides([f"++{key}=x.ckpt"])
    yosinski.check_overrides(["model=timm", "model.name=test_resnet", "study.classes_a=[0,1]"])
    with pytest.raises(ConfigError, match="must not share classes"):
        yosinski.compose_study(["study.classes_a=[0,1]", "study.classes_b=[1,2]"])
    with pytest.raises(ConfigError, match="study.kinds=.*choose among"):
        yosinski.compose_study(["study.kinds=[AnB,CnD]"])


@pytest.mark.slow
def test_the_whole_study_runs_with_tiny_settings(tmp_path):
    tiny = [
        "data=digits",
        "model.depth=2",
        "model.width=4",
        "study.base_epochs=1",
        "study.transfer_epochs=1",
        "study.b_train_size=100",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_model_summary=false",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    study = yosinski.run_study(tiny)
    assert study.parent == tmp_path / "logs" / "yosinski" / "multiruns"
    runs = collect_runs(study)
    assert set(runs["status"]) == {"completed"}, runs
    assert sorted(runs["job"]) == sorted(
        ["baseA_seed0", "baseB_seed0"]
        + [f"{kind}_n{n}_seed0" for kind in ("AnB", "AnB+", "BnB", "BnB+") for n in (1, 2)]
    )
    for name in ("yosinski.md", "yosinski.csv", "yosinski.png"):
        assert (study / name).is_file()

    def state(job: str) -> dict[str, torch.Tensor]:
        summary = json.loads((study / job / "summary.json").read_text())
        return torch.load(summary["best_checkpoint"], weights_only=True)["state_dict"]

    from trainlab.models.classifier import Classifier

    model = Classifier.load_from_checkpoint(
        json.loads((study / "AnB_n1_seed0" / "summary.json").read_text())["best_checkpoint"]
    )
    assert model.hparams.network["input_shape"] == [1, 8, 8] and model.hparams.network["num_classes"] == 5
    first, second = [[f"net.{k}" for k in s.keys] for s in split_network(model.net).stages]
    base_a, base_b = state("baseA_seed0"), state("baseB_seed0")
    for key in first:  # AnB / BnB: stage 1 copied from the base network and frozen
        assert_close(state("AnB_n1_seed0")[key], base_a[key])
        assert_close(state("BnB_n1_seed0")[key], base_b[key])
    for key in first + second:  # n = 2: both stages from baseA, frozen
        assert_close(state("AnB_n2_seed0")[key], base_a[key])
    fine_tuned = state("AnB+_n1_seed0")  # AnB+: copied, then trained on B
    assert any(not torch.equal(fine_tuned[k], base_a[k]) for k in first if k.endswith("weight"))
    summary = json.loads((study / "AnB_n1_seed0" / "summary.json").read_text())
    assert "transfer=partial" in summary["overrides"] and "study.n=1" in summary["overrides"]
