"""Wrong inputs by class, each refused (or warned about) before training, naming the key and the fix:
batch and split sizes, zero or negative trainer knobs, list lengths, unreadable weight files,
user config files that fail to parse, names that escape logs/, wrong-typed summaries in a report,
missing extras, and likely mistakes (lr 0, a linear probe of a random backbone)."""

from __future__ import annotations

import logging

import pytest

from trainlab.checks import check_config
from trainlab.utils.config import ConfigError

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv", "trainer.max_epochs=1"]


# --- trainer knobs at 0 or below ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.accumulate_grad_batches=0", r"trainer.accumulate_grad_batches=0 is out of range: .*>= 1"),
        ("trainer.val_check_interval=0", r"trainer.val_check_interval=0 .*\(0, 1\].*>= 1"),
        ("trainer.val_check_interval=0.0", r"trainer.val_check_interval=0.0 "),
        ("trainer.val_check_interval=1.5", r"trainer.val_check_interval=1.5 "),
        ("trainer.log_every_n_steps=0", r"trainer.log_every_n_steps=0 "),
        ("trainer.check_val_every_n_epoch=0", r"trainer.check_val_every_n_epoch=0 "),
        ("trainer.max_epochs=-2", r"trainer.max_epochs=-2 .*-1 \(no epoch limit\)"),
        ("trainer.max_steps=-5", r"trainer.max_steps=-5 "),
        ("trainer.gradient_clip_val=-1", r"trainer.gradient_clip_val=-1 .*>= 0"),
        ("+trainer.limit_train_batches=-1", r"trainer.limit_train_batches=-1 "),
        ("+trainer.limit_val_batches=1.5", r"trainer.limit_val_batches=1.5 .*\[0.0, 1.0\]"),
        ("+trainer.num_sanity_val_steps=-3", r"trainer.num_sanity_val_steps=-3 "),
    ],
)
def test_trainer_knobs_out_of_range_are_refused(make_cfg, override, expected):
    with pytest.raises(ConfigError, match=expected):
        check_config(make_cfg(*TINY, override))


@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=0.5",
        "trainer.val_check_interval=3",
        "trainer.gradient_clip_val=0",
        "trainer.gradient_clip_val=1.0",
        "+trainer.limit_train_batches=0.25",
        "+trainer.limit_train_batches=3.0",  # Lightning takes a whole float above 1 as a count
        "+trainer.limit_val_batches=0",
        "+trainer.num_sanity_val_steps=-1",
        "trainer.check_val_every_n_epoch=null",
    ],
)
def test_trainer_knobs_in_range_pass(make_cfg, override):
    check_config(make_cfg(*TINY, override))


def test_lr_zero_is_warned_about(make_cfg, caplog):
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        check_config(make_cfg(*TINY, "optimizer.lr=0"))
    assert any("optimizer.lr=0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"num_training": 0}, r"lr_find.num_training=0 must be an integer >= 13"),
        ({"num_training": 5}, r"lr_find.num_training=5 "),
        ({"num_training": 2.5}, r"lr_find.num_training=2.5 "),
        ({"min_lr": 0.0}, r"0 < lr_find.min_lr < lr_find.max_lr"),
        ({"steps": 100}, r"lr_find.steps: unknown setting; valid: min_lr, max_lr, num_training"),
    ],
)
def test_lr_find_settings_are_checked(settings, expected):
    from trainlab.lr_find import check_settings

    with pytest.raises(ConfigError, match=expected):
        check_settings(settings)
    assert check_settings({"num_training": 13})["num_training"] == 13


def test_lr_find_with_zero_steps_fails_before_building(make_cfg, tmp_path):
    from trainlab.lr_find import lr_find

    with pytest.raises(ConfigError, match="lr_find.num_training=0"):
        lr_find(make_cfg(*TINY, "+lr_find.num_training=0"))
    assert not (tmp_path / "run" / "lr_find.json").exists()


# --- batch and split sizes against BatchNorm and drop_last ------------------------------------


def _built(make_cfg, *overrides):
    from trainlab import builders

    cfg = make_cfg(*TINY, "model.depth=2", "norm=batchnorm", *overrides)
    check_config(cfg)
    datamodule = builders.build_datamodule(cfg)
    model, _ = builders.build_model(cfg, datamodule)
    return datamodule, model


def test_a_last_batch_of_one_under_batchnorm_is_dropped_with_a_warning(make_cfg, caplog):
    # digits: 1293 training examples = 323 batches of 4 + 1; the MLP's BatchNorm1d cannot take the 1
    with caplog.at_level(logging.WARNING, logger="trainlab"):
        datamodule, _ = _built(make_cfg, "data.batch_size=4")
    assert datamodule.drop_last and len(datamodule.train_dataloader()) == 323
    warning = next(r.getMessage() for r in caplog.records if "one example" in r.getMessage())
    assert "data.batch_size=4" in warning and "blocks.0.1 (BatchNorm1d)" in warning
    assert "data.drop_last=true" in warning


def test_a_last_batch_of_one_stays_where_no_layer_needs_a_batch(make_cfg):
    datamodule, _ = _built(make_cfg, "data.batch_size=4", "norm=layernorm")
    assert not datamodule.drop_last and len(datamodule.train_dataloader()) == 324
    # the CNN's BatchNorm2d sees 2x2 maps or more on 8x8 digits: a batch of one has 4+ values a channel
    datamodule, _ = _built(make_cfg, "data.batch_size=4", "model=cnn", "model.depth=2", "model.width=4")
    assert not datamodule.drop_last


def test_every_batch_of_one_under_batchnorm_is_refused(make_cfg):
    with pytest.raises(
        ConfigError, match=r"data.batch_size=1: every training batch holds one example.*norm=layernorm"
    ):
        _built(make_cfg, "data.batch_size=1")


def test_the_probe_leaves_the_network_as_it_was(make_cfg):
    from trainlab.checks import single_value_norms

    _, model = _built(make_cfg)
    net = model.net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert single_value_norms(net, (1, 8, 8)) == ["blocks.0.1 (BatchNorm1d)", "blocks.1.1 (BatchNorm1d)"]
    assert net.training and all(m.training for m in net.modules())
    assert all((before[k] == v).all() for k, v in net.state_dict().items())


def test_a_run_whose_last_batch_has_one_example_trains_every_full_batch(make_cfg, tmp_path):
    from trainlab.train import train

    # 41 training examples: 10 batches of 4 and a last one of 1, which BatchNorm1d would refuse
    summary = train(
        make_cfg(*TINY, "norm=batchnorm", "data.train_size=41", "data.batch_size=4", "test=false")
    )
    assert summary["status"] == "completed" and summary["global_step"] == 10


def test_a_batch_larger_than_the_split_with_drop_last_is_refused(make_cfg):
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size=64 is larger than the training split with data.drop_last=true \(20 training",
    ):
        _built(make_cfg, "data.train_size=20", "data.batch_size=64", "data.drop_last=true")


# --- list lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["+optimizer.betas=[0.9]"],
            r"optimizer.betas=\[0.9\] \(list\) does not fit torch.optim.Adam: expected a list of 2",
        ),
        (["+optimizer.betas=[0.9,0.99,0.999]"], r"optimizer.betas=\[0.9, 0.99, 0.999\] .*a list of 2"),
        (
            ["optimizer=adamw", "+optimizer.betas=[0.9,fast]"],
            r"optimizer.betas=\[0.9, 'fast'\] .*a list of 2 \(float",
        ),
    ],
)
def test_list_knobs_of_the_wrong_length_are_refused(make_cfg, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        check_config(make_cfg(*TINY, *overrides))


def test_list_knobs_of_the_right_length_pass(make_cfg):
    check_config(make_cfg(*TINY, "+optimizer.betas=[0.8,0.99]"))
    check_config(make_cfg(*TINY, "scheduler=step", "scheduler.milestones=[0.3,0.6,0.9]"))  # any length


# --- weight files that cannot be read --------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content"), [("empty.pth", b""), ("cut.pth", None), ("cut.safetensors", None)]
)
def test_an_unreadable_pretrained_file_is_named(tmp_path, filename, content):
    import timm
    import torch
    from safetensors.torch import save_file

    from test_timm_backbone import load, timm_classifier

    path = tmp_path / filename
    state = timm.create_model("test_resnet", num_classes=10, in_chans=1).state_dict()
    if content is None:  # a copy cut short
        (torch.save(state, path) if filename.endswith(".pth") else save_file(state, str(path)))
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"transfer.pretrained_file='{path}'"):
        load(timm_classifier(), pretrained_file=str(path))


# --- a wrong-typed summary in a study report -------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("metrics", "high", '`metrics` is "high" (str)'),
        ("metrics", {"test/acc": "high"}, '`metrics.test/acc` is "high"'),
        ("overrides", "init=c", '`overrides` is "init=c" (str)'),
        ("wall_time_s", "1 min", '`wall_time_s` is "1 min"'),
        ("status", 3, "`status` is 3 (int)"),
        ("global_step", True, "`global_step` is true (bool)"),
    ],
)
def test_a_summary_of_another_shape_is_a_failed_job_and_the_report_goes_on(tmp_path, field, value, named):
    import json

    from trainlab.report.__main__ import main as report_main
    from trainlab.report.collect import load_jobs

    from test_studies import fake_job

    fake_job(tmp_path, 0, ["init=a", "seed=1"], acc=0.9)
    fake_job(tmp_path, 1, ["init=b", "seed=1"], acc=0.8)
    bad = fake_job(tmp_path, 2, ["init=c", "seed=1"], acc=0.7) / "summary.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), field: value}))
    (bad.parent / ".hydra" / "overrides.yaml").write_text("- init=c\n- seed=1\n")
    jobs = load_jobs(tmp_path).set_index("job")
    assert list(jobs["status"]) == ["completed", "completed", "failed"]
    assert (
        jobs.loc["2", "init"] == "c"
        and str(bad) in jobs.loc["2", "error"]
        and named in jobs.loc["2", "error"]
    )
    assert report_main([str(tmp_path)]) == 0  # today: AttributeError 'str' object has no attribute 'items'
    assert (
        "job 2 (init=c): **failed** — summary.json of another shape" in (tmp_path / "report.md").read_text()
    )


# --- missing extras --------------------------------------------------------------------------


def test_a_search_without_optuna_says_what_to_install(make_cfg, monkeypatch):
    import sys

    from hydra.core.plugins import Plugins

    cfg = make_cfg(*TINY, "hparams_search=optuna")
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails as where it is not installed
    # today: "Error locating target 'optuna.samplers.TPESampler'", nothing about the extra
    with pytest.raises(Exception, match=r"hparams_search=optuna .*pip install 'trainlab\[search\]'"):
        Plugins.instance()._instantiate(cfg.hydra.sweeper)


def test_the_search_sweeper_still_builds_its_sampler_and_pruner(make_cfg):
    import optuna
    from hydra.core.plugins import Plugins

    sweeper = Plugins.instance()._instantiate(make_cfg(*TINY, "hparams_search=optuna").hydra.sweeper)
    assert isinstance(sweeper.sampler, optuna.samplers.TPESampler)
    assert isinstance(sweeper.pruner, optuna.pruners.MedianPruner)


@pytest.mark.slow
def test_a_search_without_optuna_on_the_command_line(tmp_path):
    import subprocess
    import sys

    hide_optuna = (
        "import sys; sys.modules['optuna'] = None; from trainlab.train import main; "
        f"sys.argv = ['train', 'hparams_search=optuna', 'paths.log_dir={tmp_path}']; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_optuna], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "pip install 'trainlab[search]'" in result.stderr
    assert not list(tmp_path.glob("train/multiruns/*/0"))  # no job started


# --- names that would leave logs/ ------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/tmp/elsewhere", "a/b", "..", ""])
def test_a_task_name_that_leaves_logs_is_refused(make_cfg, name):
    with pytest.raises(ConfigError, match=r"task_name=.* must be a plain name.*paths.log_dir"):
        check_config(make_cfg(*TINY, f"task_name={name!r}" if name == "" else f"task_name={name}"))


def test_a_plain_task_name_passes(make_cfg):
    check_config(make_cfg(*TINY, "task_name=my_study-2.1"))


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [False, True])
def test_a_task_name_that_leaves_logs_creates_nothing(tmp_path, multirun):
    from conftest import run_cli

    cwd = tmp_path / "project"
    cwd.mkdir()
    args = ["-m", "seed=1,2"] if multirun else []
    result = run_cli("trainlab.train", *args, *TINY, "task_name=../outside", cwd=cwd)
    assert result.returncode != 0
    assert "task_name='../outside' must be a plain name" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["project"]  # no directory made anywhere


# --- a user's config files that do not parse -------------------------------------------------

BROKEN_FILES = {
    "flow list left open": (
        "model:\n  width: [16\n  depth: 1\n",
        r"mine.yaml, line 4, column 8: not valid YAML: .*flow sequence",
    ),
    "a tab": ("model:\n\twidth: 16\n", r"mine.yaml, line 3, column 1: not valid YAML: .*'\\t'"),
    "duplicate key": (
        "model:\n  width: 16\n  width: 8\n",
        r"mine.yaml, line 4, column 3: .*duplicate key width",
    ),
    "interpolation": (
        "model:\n  width: ${model.depth\n",
        r"mine.yaml: the interpolation in '\$\{model.depth' does not parse",
    ),
    "a list": ("- a\n- b\n", r"mine.yaml: a config file holds keys .* holds a YAML list"),
}


def _user_folder(root, text):
    (root / "my_conf" / "experiment").mkdir(parents=True)
    (root / "my_conf" / "experiment" / "mine.yaml").write_text("# @package _global_\n" + text)
    return root / "my_conf"


@pytest.mark.parametrize("case", BROKEN_FILES)
def test_a_broken_user_config_file_is_named_with_its_line(make_cfg, tmp_path, case):
    text, expected = BROKEN_FILES[case]
    folder = _user_folder(tmp_path, text)
    with pytest.raises(ConfigError, match=expected):
        make_cfg(*TINY, f"hydra.searchpath=[file://{folder}]", "experiment=mine")


def test_user_config_folders_are_read_from_the_command_line(tmp_path):
    from trainlab.utils.user_configs import user_config_dirs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    arguments = [
        "--config-dir",
        str(tmp_path / "a"),
        f"hydra.searchpath=[file://{tmp_path / 'b'},pkg://x.conf]",
    ]
    assert user_config_dirs(arguments) == [tmp_path / "a", tmp_path / "b"]
    assert user_config_dirs([f"-cd={tmp_path / 'a'}", "model=mlp"]) == [tmp_path / "a"]


def test_a_sound_user_config_folder_passes(make_cfg, tmp_path):
    folder = _user_folder(tmp_path, "model:\n  width: ${oc.env:WIDTH,16}\n")
    cfg = make_cfg(*TINY, f"hydra.searchpath=[file://{folder}]", "experiment=mine")
    assert cfg.model.width == 16


@pytest.mark.slow
def test_a_broken_user_config_file_on_the_command_line(tmp_path):
    from conftest import run_cli

    folder = _user_folder(tmp_path, BROKEN_FILES["flow list left open"][0])
    result = run_cli(
        "trainlab.train", *TINY, f"hydra.searchpath=[file://{folder}]", "experiment=mine", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"ConfigError: {folder / 'experiment' / 'mine.yaml'}, line 4, column 8: not valid YAML: "
        "while parsing a flow sequence expected ',' or ']', but got ':'."
    )
    assert not (tmp_path / "logs").exists()


def test_a_task_name_that_leaves_logs_is_one_line_before_hydra(tmp_path):
    from trainlab.utils.user_configs import check_command_line

    with pytest.raises(ConfigError, match=r"^task_name='\.\./x' must be a plain name"):
        check_command_line(["model=mlp", "task_name=../x"])
    folder = _user_folder(tmp_path, "task_name: ../../elsewhere\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: task_name='../../elsewhere' must be a plain name"):
        check_command_line([f"hydra.searchpath=[file://{folder}]", "experiment=mine"])
    check_command_line(["task_name=my_study", "-m", "task_name=a,b"])
