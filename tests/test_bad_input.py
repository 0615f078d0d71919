"""Bad input fails before training with a message that names the problem and the valid choices."""

from __future__ import annotations

import socket
import time

import pytest
import timm
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from test_timm_backbone import load, timm_classifier
from trainlab.checks import check_config, check_monitors
from trainlab.report.__main__ import main as report_main
from trainlab.report.collect import load_jobs
from trainlab.tracking import loggers
from trainlab.train import train
from trainlab.utils import internet
from trainlab.utils.config import ConfigError

from conftest import read_summary, run_cli
from test_studies import fake_job


def test_unknown_option_lists_the_valid_ones(make_cfg):
    with pytest.raises(MissingConfigException) as error:
        make_cfg("model=transformer")
    message = str(error.value)
    assert "model/transformer" in message and "cnn" in message and "mlp" in message


def test_unknown_option_on_the_command_line(tmp_path):
    result = run_cli("trainlab.train", "data=imagenet", f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'data/imagenet'" in result.stderr and "mnist5k" in result.stderr


def test_missing_required_value_names_the_key(make_cfg, tmp_path):
    with pytest.raises(
        ConfigError, match=r"Missing required value\(s\): data.source.root.*data.source.root=<value>"
    ):
        train(make_cfg("data=folder"))
    assert read_summary(tmp_path / "run")["status"] == "failed"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.batch_size=abc",
            r"data.batch_size='abc' \(str\) does not fit .*ImageDataModule: expected int",
        ),
        ("optimizer.lr=fast", r"optimizer.lr='fast' .* expected float"),
        ("model.depth=2.5", r"model.depth=2.5 .* expected int"),
        ("norm.position=middle", r"norm.position='middle' is not one of \['pre_act', 'post_act'\]"),
        (
            "+model.dropout_rate=0.1",
            r"model.dropout_rate: trainlab.models.cnn.CNN has no argument 'dropout_rate'; valid arguments: .*depth",
        ),
    ],
)
def test_wrong_values_are_caught_before_training(make_cfg, tmp_path, override, expected):
    with pytest.raises(ConfigError, match=expected):
        train(make_cfg(override))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["global_step"] == 0


def test_struct_mode_rejects_typos(make_cfg):
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        make_cfg("data.batchsize=32")


def test_folder_that_does_not_exist(make_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="data.source.root=.*nowhere.*is not a directory"):
        train(make_cfg("data=folder", f"data.source.root={tmp_path / 'nowhere'}"))
    assert read_summary(tmp_path / "run")["global_step"] == 0


# --- settings that used to run wrongly, or fail only after training had started ---------------

TINY = ["data=digits", "model=mlp", "model.depth=1", "model.width=16", "logger=csv", "trainer.max_epochs=1"]


def fails_before_training(make_cfg, tmp_path, match, *overrides):
    with pytest.raises(ConfigError, match=match):
        train(make_cfg(*TINY, *overrides))
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["global_step"] == 0


@pytest.mark.parametrize("seed", ["abc", "-1", "4294967296", "1.5"])
def test_seed_must_be_an_integer_or_null(make_cfg, tmp_path, seed):
    # today: Lightning's int('abc') ValueError, or a random seed in place of -1 (a warning only)
    fails_before_training(
        make_cfg, tmp_path, r"seed=.* must be an integer from 0 to 4294967295 .*or null", f"seed={seed}"
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["optimizer.lr=-0.1"],
            r"optimizer \(torch.optim.Adam\): Invalid learning rate: -0.1 \(optimizer.lr=-0.1",
        ),
        (["optimizer=sgd", "optimizer.momentum=-1"], r"Invalid momentum value: -1 \(.*optimizer.momentum=-1"),
    ],
)
def test_optimizer_values_torch_rejects(make_cfg, tmp_path, overrides, match):
    # today: torch's "Invalid learning rate: -0.1" when fit builds the optimizer, naming no setting
    fails_before_training(make_cfg, tmp_path, match, *overrides)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.num_workers=-1", r"data.num_workers=-1 must be >= 0"),  # today: torch's DataLoader message
        ("model.depth=-1", r"model=mlp needs model.depth >= 0 .*got model.depth=-1"),  # today: "depth=-1"
    ],
)
def test_messages_name_the_setting(make_cfg, tmp_path, override, match):
    with pytest.raises(Exception, match=match):
        train(make_cfg(*TINY, override))
    assert read_summary(tmp_path / "run")["global_step"] == 0


def test_max_epochs_0_warns(make_cfg, caplog):
    check_config(make_cfg(*TINY, "trainer.max_epochs=0"))
    assert "trainer.max_epochs=0: nothing is trained" in caplog.text


def test_warmup_as_long_as_the_run(make_cfg, tmp_path):
    # 1 epoch of 640 examples in batches of 64 = 10 steps; today the run ends still warming up
    fails_before_training(
        make_cfg,
        tmp_path,
        r"scheduler.warmup_steps=10 is not shorter than this run's 10 optimizer steps.*"
        r"scheduler.warmup_steps=1, a tenth",
        "scheduler.warmup_steps=10",
        "data.train_size=640",
        "data.batch_size=64",
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["callbacks.model_checkpoint.monitor=val/accuracy"],
        ["callbacks=early_stopping", "callbacks.early_stopping.monitor=val_acc"],
    ],
)
def test_monitor_that_is_never_logged(make_cfg, tmp_path, overrides):
    # today: ModelCheckpoint fails after the first epoch, EarlyStopping at its first check
    name = overrides[-1].split("=")[0]
    fails_before_training(
        make_cfg,
        tmp_path,
        rf"{name}='val.?acc\w*' is not a metric this run logs; Classifier logs: .*val/acc",
        *overrides,
    )


def test_monitor_names_follow_the_module(make_cfg):
    regression = ["experiment=noise_as_l2"]
    check_monitors(make_cfg(*regression))  # monitors val/mse, which NoisyRegression logs
    with pytest.raises(ConfigError, match="NoisyRegression logs: .*val/mse.*val/objective"):
        check_monitors(make_cfg(*regression, "callbacks.model_checkpoint.monitor=val/loss_epoch"))


def test_even_gaussian_blur_kernel(make_cfg, tmp_path):
    # today: Albumentations 2.0.8 accepts it without a warning and blurs with 5x5 kernels
    fails_before_training(
        make_cfg,
        tmp_path,
        r"augment.transforms\[0\] \(albumentations.GaussianBlur\): bad argument: blur_limit=\[4, 4\]: "
        r"kernel sizes must be 0 or odd.*blur_limit: \[5, 5\]",
        "augment.transforms=[{_target_:albumentations.GaussianBlur,blur_limit:[4,4]}]",
    )


def test_pretrained_file_of_another_network(tmp_path):
    renamed = {f"encoder.{k}": v for k, v in timm.create_model("test_resnet").state_dict().items()}
    torch.save(renamed, tmp_path / "other.pth")
    # today: timm loads it non-strictly (nothing matches), and the report lists every tensor as loaded
    with pytest.raises(
        ConfigError,
        match=r"transfer.pretrained_file='.*other.pth': none of its \d+ tensors has the name of one of this "
        r"network's \d+ \(the file's first keys: encoder.conv1",
    ):
        load(timm_classifier(), pretrained_file=str(tmp_path / "other.pth"))


def test_pretrained_file_that_matches_in_part_reports_what_it_loaded(tmp_path):
    state = timm.create_model("test_resnet", num_classes=1000, in_chans=3).state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    partial["projector.weight"] = torch.zeros(4, 4)
    torch.save(partial, tmp_path / "partial.pth")
    model = timm_classifier()
    report = load(model, pretrained_file=str(tmp_path / "partial.pth"))
    layer4 = [k for k in state if k.startswith("layer4.")]
    assert sorted(report.missing) == sorted(layer4)  # today: [] (every tensor "loaded")
    assert not set(report.loaded) & set(layer4)
    assert "projector.weight" in report.unused
    pretrained_report = report.as_dict()  # what summary.json's "pretrained" holds
    assert (
        f"the file holds {len(partial)} tensors; {len(partial) - 1} match this network by name"
        in (pretrained_report["notes"])
    )


def test_report_names_a_corrupt_summary_and_lists_the_other_jobs(tmp_path):
    fake_job(tmp_path, 0, ["init=a", "seed=1"], acc=0.9)
    fake_job(tmp_path, 1, ["init=b", "seed=1"], acc=0.8)
    broken = fake_job(tmp_path, 2, ["init=c", "seed=1"], acc=0.7) / "summary.json"
    broken.write_text(broken.read_text()[:25])  # cut off mid-write
    (broken.parent / ".hydra" / "overrides.yaml").write_text("- init=c\n- seed=1\n")
    # today: json.JSONDecodeError ("Expecting ',' delimiter"), naming no file, and no report
    jobs = load_jobs(tmp_path).set_index("job")
    assert list(jobs["status"]) == ["completed", "completed", "failed"]
    assert jobs.loc["2", "init"] == "c" and f"corrupt summary.json ({broken})" in jobs.loc["2", "error"]
    assert report_main([str(tmp_path)]) == 0
    assert "job 2 (init=c): **failed** — corrupt summary.json" in (tmp_path / "report.md").read_text()


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where", ["closed_port", "unroutable"])
def test_wandb_key_without_network_falls_back_to_offline_fast(monkeypatch, caplog, where):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    if where == "closed_port":
        url = f"http://127.0.0.1:{closed_port()}"
    else:  # TEST-NET-1: packets go nowhere; a tiny timeout keeps the test short
        url = "http://192.0.2.1:443"
        monkeypatch.setattr(internet, "PROBE_TIMEOUT_S", 0.3)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    start = time.monotonic()
    # today: True (a key is set), then W&B retries for ~2 minutes and stops the run
    assert loggers.wandb_logged_in() is False
    assert time.monotonic() - start < 3
    assert f"W&B: logged in, but {url} does not answer" in caplog.text and "offline" in caplog.text
    assert loggers.wandb_logger(project="p", save_dir=".")._offline is True
