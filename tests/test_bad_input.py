"""Bad input fails before training with a message that names the problem and the valid choices."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from trainlab.train import train
from trainlab.utils.config import ConfigError

from conftest import read_summary, run_cli


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
            "+model.dropout=0.1",
            r"model.dropout: trainlab.models.cnn.CNN has no argument 'dropout'; valid arguments: .*depth",
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
