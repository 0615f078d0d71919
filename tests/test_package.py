"""trainlab as a package: its own --help, and a wheel installed (not editable) into a fresh
virtual environment that trains from any directory, also a study extended from outside."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from trainlab import eval as trainlab_eval
from trainlab import preview, train

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
EXAMPLE = REPO / "examples" / "my_study"
TINY_RUN = [
    "trainer.max_steps=3",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
]


def options(group: str) -> str:
    """The line Hydra's $APP_CONFIG_GROUPS writes for `group`: its options, sorted."""
    return f"{group}: " + ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


def assert_trainlab_help(text: str) -> None:
    assert text.startswith(
        "trainlab: a research template for studying how to make neural networks train well"
    )
    for group in ("data", "model", "init", "norm", "activation", "augment", "transfer", "experiment"):
        assert options(group) in text
    examples = text.split("== Examples ==")[1].split("==")[0]
    assert examples.count("\n  trainlab-train") == 3
    for where in ("logs/<task_name>/runs/<time>/", "summary.json", "checkpoints/", "csv/", "wandb/"):
        assert where in text
    assert "$" not in text  # every placeholder filled


@pytest.mark.parametrize("entry_point", [train._hydra_main, trainlab_eval._hydra_main, preview.main])
def test_help_is_trainlabs_own(entry_point, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["trainlab", "--help"])
    with pytest.raises(SystemExit) as exit_:
        entry_point()
    assert exit_.value.code == 0
    assert_trainlab_help(capsys.readouterr().out)


# --- a non-editable install into a fresh virtual environment ----------------------------------------


def run(*command: str | Path, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never the clone's src/
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def fresh_venv(path: Path) -> tuple[Path, Path]:
    """A virtual environment whose dependencies are the running interpreter's (no download of torch):
    a .pth line naming that site-packages adds it to sys.path without running the .pth files in it,
    so an editable trainlab installed there stays invisible. Returns (bin, site-packages)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    bin_dir = path / "bin"
    python = bin_dir / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return bin_dir, site


@pytest.mark.slow
def test_a_wheel_installed_from_a_clone_trains_anywhere_and_runs_a_study_from_outside(tmp_path):
    # pip builds in the source tree (build/, *.egg-info): a copy keeps the clone untouched
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("src", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    bin_dir, site = fresh_venv(tmp_path / "venv")
    pip = ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    run(bin_dir / "python", *pip, "--ignore-installed", "--no-cache-dir", source, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = run(
        bin_dir / "python",
        "-c",
        "import trainlab; print(trainlab.__file__); print(trainlab.CONFIG_DIR)",
        cwd=elsewhere,
    )
    module, config_dir = where.stdout.split()
    assert Path(module) == site / "trainlab" / "__init__.py"  # the installed copy, not the clone
    assert Path(config_dir) == site / "trainlab" / "conf"
    # the Optuna sweeper (hparams_search=optuna) sits in the hydra_plugins namespace, where Hydra finds it
    assert (site / "hydra_plugins" / "trainlab_optuna_sweeper" / "optuna_sweeper.py").is_file()
    plugins = run(
        bin_dir / "python", "-c", "from hydra.core.plugins import Plugins; print(*Plugins.instance().class_name_to_class)",
        cwd=elsewhere,
    ).stdout  # fmt: skip
    assert "hydra_plugins.trainlab_optuna_sweeper.optuna_sweeper.OptunaSweeper" in plugins.split()

    assert_trainlab_help(run(bin_dir / "trainlab-train", "--help", cwd=elsewhere).stdout)
    job = run(bin_dir / "trainlab-train", "--cfg", "job", "experiment=mlp_digits", cwd=elsewhere).stdout
    assert "task_name: train" in job and "width: 128" in job

    # the example study, from its own folder outside trainlab: its configs and module, no edit of trainlab
    study = shutil.copytree(EXAMPLE, tmp_path / "my_study", ignore=ignore)
    run(
        bin_dir / "trainlab-train",
        "--config-dir",
        study / "conf",
        "experiment=my_study",
        *TINY_RUN,
        cwd=elsewhere,
        pythonpath=study,
    )
    (run_dir,) = (elsewhere / "logs" / "my_study" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert summary["init_stats"]["sparse_density"] == pytest.approx(15 / 64)
    assert (run_dir / "csv" / "metrics.csv").is_file()

    # its checkpoint names my_study's norm: evaluating it needs the study's package trusted
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    run(
        bin_dir / "trainlab-eval",
        f"ckpt_path={checkpoint}",
        "trusted_targets=[my_study]",
        cwd=elsewhere,
        pythonpath=study,
    )
    (eval_dir,) = (elsewhere / "logs" / "eval" / "runs").iterdir()
    evaluated = json.loads((eval_dir / "summary.json").read_text())
    assert evaluated["status"] == "completed" and 0 <= evaluated["metrics"]["test/acc"] <= 1
