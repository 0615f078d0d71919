"""Layer statistics: the callback's numbers equal a direct computation on tiny nets with hand-set
weights; it measures only on sampled steps; it writes its CSV and plots; it runs by default."""

from __future__ import annotations

import copy
import csv
import json
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainlab.callbacks.layer_stats import LayerStats
from trainlab.train import train
from trainlab.utils.config import ConfigError

LR = 0.1


class Tiny(pl.LightningModule):
    """`net` trained by plain SGD with cross-entropy on one fixed batch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8, 3), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])


def tanh_mlp() -> nn.Sequential:
    """Layer 1's unit 0 has big weights (saturates on some examples), the others small ones."""
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(
            torch.tensor([[4.0, -3.0, 2.0], [0.5, 0.1, -0.2], [-0.3, 0.2, 0.4], [0.1, 0.1, 0.1]])
        )
        net[0].bias.copy_(torch.tensor([0.5, 0.0, -0.1, 0.2]))
        net[2].weight.copy_(torch.arange(16.0).reshape(4, 4).sin())
        net[2].bias.fill_(0.1)
        net[4].weight.copy_(torch.arange(8.0).reshape(2, 4).cos())
        net[4].bias.zero_()
    return net


def relu_mlp() -> nn.Sequential:
    """Unit 1 of layer 1 has bias -100: dead on every example; unit 3 of layer 2 too."""
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(12.0).reshape(4, 3).cos())
        net[0].bias.copy_(torch.tensor([0.1, -100.0, 0.0, 0.3]))
        net[2].weight.copy_(torch.arange(16.0).reshape(4, 4).sin())
        net[2].bias.copy_(torch.tensor([0.2, 0.0, 0.1, -100.0]))
        net[4].weight.copy_(torch.arange(8.0).reshape(2, 4).cos())
        net[4].bias.zero_()
    return net


def expected_stats(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> dict[int, dict[str, float]]:
    """Every statistic at step 0, computed by hand: forward, backward, one SGD step."""
    net = copy.deepcopy(net)
    pre, act, h = [], [], x
    for i in (0, 2):
        z = net[i](h)
        z.retain_grad()
        a = net[i + 1](z)
        pre.append(z)
        act.append(a)
        h = a
    F.cross_entropy(net[4](h), y).backward()
    stats = {}
    for depth, (z, a, layer, kind) in enumerate(
        zip(pre, act, (net[0], net[2]), (net[1], net[3]), strict=True), 1
    ):
        a = a.detach()
        s = {
            "pre_act_mean": z.mean().item(),
            "pre_act_std": z.std().item(),  # unbiased, over all elements
            "act_mean": a.mean().item(),
            "act_std": a.std().item(),
            "grad_std": z.grad.std().item(),
            "weight_grad_norm": layer.weight.grad.norm().item(),
            # plain SGD: W_after - W_before = -lr * grad
            "update_ratio": (LR * layer.weight.grad.norm() / layer.weight.norm()).item(),
            # per example: population variance across the 4 units; over the variance of everything
            "unit_diversity": math.sqrt(
                a.var(dim=1, correction=0).mean().item() / a.var(correction=0).item()
            ),
        }
        if isinstance(kind, nn.Tanh):
            s["saturated"] = (a.abs() > 0.99).float().mean().item()
        else:
            s["dead"] = (a == 0).all(dim=0).float().mean().item()
        stats[depth] = s
    return stats


def fit(
    net: nn.Module, root, callback: LayerStats, max_steps: int = 1, batches: int = 1, **trainer_kwargs
) -> pl.Trainer:
    """Fit on the fixed batch, split into `batches` batches per epoch."""
    x, y = batch()
    trainer = pl.Trainer(
        max_steps=max_steps,
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        **trainer_kwargs,
    )
    trainer.fit(Tiny(net), DataLoader(TensorDataset(x, y), batch_size=len(y) // batches))
    return trainer


def recorded(callback: LayerStats, step: int = 0) -> dict[int, dict[str, float]]:
    stats: dict[int, dict[str, float]] = {}
    for row in callback.rows:
        if row["step"] == step:
            stats.setdefault(row["depth"], {})[row["stat"]] = row["value"]
    return stats


@pytest.mark.parametrize("make_net", [tanh_mlp, relu_mlp])
def test_numbers_equal_a_direct_computation(make_net, tmp_path):
    net = make_net()
    x, y = batch()
    expected = expected_stats(net, x, y)
    callback = LayerStats(every_n_steps=1, plots=False)
    fit(net, tmp_path, callback)
    got = recorded(callback)
    assert got.keys() == expected.keys() == {1, 2}
    for depth in expected:
        # tanh layers have `saturated` and no `dead`; ReLU layers the other way round
        assert got[depth].keys() == expected[depth].keys()
        for stat, value in expected[depth].items():
            assert got[depth][stat] == pytest.approx(value, rel=1e-5, abs=1e-7), (depth, stat)
    if make_net is tanh_mlp:
        assert 0 < got[1]["saturated"] < 1  # unit 0 saturates on some examples, not all
    else:
        assert got[1]["dead"] == 0.25 and got[2]["dead"] == 0.25  # the -100 biases, one unit of 4
    names = {row["layer"] for row in callback.rows}
    assert names == {"1", "3"}  # the activations' paths in the Sequential


def test_dead_channels_of_a_conv_pool_batch_and_positions(tmp_path):
    """A channel is dead when it is 0 at every position of every example; a channel alive at a
    single position of a single example is not."""
    conv = nn.Conv2d(1, 3, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0, 1.0]).reshape(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([-100.0, 0.0, -9.5]))  # dead; alive; alive only where x > 9.5
    x = torch.randn(4, 1, 5, 5).clamp(-3, 3)
    x[2, 0, 1, 3] = 10.0
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(75, 2))
    callback = LayerStats(every_n_steps=1, plots=False)
    trainer = pl.Trainer(
        max_steps=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Tiny(net), DataLoader(TensorDataset(x, torch.tensor([0, 1, 0, 1])), batch_size=4))
    assert recorded(callback)[1]["dead"] == pytest.approx(1 / 3)


def test_constant_init_gives_zero_unit_diversity(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():  # every layer constant, the head too (as init=constant does)
        for layer in (net[0], net[2]):
            layer.weight.fill_(0.3)
            layer.bias.fill_(0.1)
    callback = LayerStats(every_n_steps=1, plots=False)
    fit(net, tmp_path, callback, max_steps=3)
    diversity = [r["value"] for r in callback.rows if r["stat"] == "unit_diversity"]
    assert len(diversity) == 3 and max(diversity) < 1e-6  # identical units, at every step


class CountingLayerStats(LayerStats):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.activation_calls = 0
        self.gradient_calls = 0

    def _before_activation(self, module, args):
        self.activation_calls += 1
        return super()._before_activation(module, args)

    def _on_gradient(self, layer, grad):
        self.gradient_calls += 1
        return super()._on_gradient(layer, grad)


def test_measures_only_on_sampled_steps_and_leaves_no_hooks(tmp_path):
    net = relu_mlp()
    callback = CountingLayerStats(every_n_steps=3, plots=False)
    fit(net, tmp_path, callback, max_steps=7)
    # steps 0..6: sampled 0, 3, 6; two activation layers each
    assert callback.activation_calls == 6 and callback.gradient_calls == 6
    assert sorted({row["step"] for row in callback.rows}) == [0, 3, 6]
    for module in net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_gradient_accumulation_samples_the_step_once(tmp_path):
    callback = CountingLayerStats(every_n_steps=1, plots=False)
    fit(relu_mlp(), tmp_path, callback, max_steps=2, batches=2, accumulate_grad_batches=2)
    steps = [row["step"] for row in callback.rows if row["stat"] == "update_ratio"]
    assert steps == [0, 0, 1, 1]  # two layers, one update ratio each per optimizer step
    assert callback.activation_calls == 4  # the first micro-batch of each step only


def test_csv_and_plots_are_written(tmp_path):
    callback = LayerStats(every_n_steps=2)
    fit(tanh_mlp(), tmp_path, callback, max_steps=5)
    with (tmp_path / "layer_stats.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["step", "layer", "depth", "stat", "value"]
    assert len(rows) == len(callback.rows) == 3 * 2 * 9  # steps 0, 2, 4; 2 layers; 9 stats (no `dead`)
    assert {int(r["step"]) for r in rows} == {0, 2, 4}
    first = callback.rows[0]
    assert (rows[0]["layer"], float(rows[0]["value"])) == (first["layer"], pytest.approx(first["value"]))
    pngs = sorted(p.name for p in tmp_path.glob("layer_stats_*.png"))
    assert "layer_stats_saturated.png" in pngs and "layer_stats_dead.png" not in pngs
    assert len(pngs) == 9 and all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    # another fit in the same run directory (a resume) appends: one header, all samples
    fit(tanh_mlp(), tmp_path, LayerStats(every_n_steps=2, plots=False), max_steps=1)
    lines = (tmp_path / "layer_stats.csv").read_text().splitlines()
    assert lines.count("step,layer,depth,stat,value") == 1 and len(lines) == 1 + 4 * 2 * 9


@pytest.mark.parametrize(
    ("plots", "multirun", "drawn"),
    [("auto", False, True), ("auto", True, False), (True, True, True), (False, False, False)],
)
def test_plots_auto_draws_the_figures_in_single_runs_and_leaves_a_multiruns_to_its_report(
    monkeypatch, tmp_path, plots, multirun, drawn
):
    import trainlab.utils.hydra_job

    monkeypatch.setattr(trainlab.utils.hydra_job, "in_multirun", lambda: multirun)
    fit(tanh_mlp(), tmp_path, LayerStats(every_n_steps=2, plots=plots), max_steps=3)
    assert (tmp_path / "layer_stats.csv").is_file()
    assert len(list(tmp_path.glob("layer_stats_*.png"))) == (9 if drawn else 0)


def test_plots_setting_is_checked():
    with pytest.raises(ConfigError, match=r"callbacks.layer_stats.plots='yes': expected true, false or auto"):
        LayerStats(plots="yes")


def test_default_callbacks_include_layer_stats(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=mlp",
        "model.depth=2",
        "model.width=16",
        "logger=csv",
        "trainer.max_steps=3",
        "callbacks.layer_stats.every_n_steps=2",
        "callbacks.layer_stats.csv_logger=true",
    )
    assert cfg.callbacks.layer_stats._target_ == "trainlab.callbacks.layer_stats.LayerStats"
    summary = train(cfg)
    run = tmp_path / "run"
    assert summary["status"] == "completed"
    with (run / "layer_stats.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {(r["layer"], r["depth"]) for r in rows} == {("blocks.0", "1"), ("blocks.1", "2")}
    assert {int(r["step"]) for r in rows} == {0, 2}
    # the default study's norm=batchnorm: pre-activations are normalised at step 0
    pre_std = [float(r["value"]) for r in rows if r["stat"] == "pre_act_std" and r["step"] == "0"]
    assert pre_std == [pytest.approx(1.0, abs=0.01)] * 2
    assert (run / "layer_stats_act_std.png").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "layer_stats_act_std/L01" in header and "layer_stats_grad_std/L02" in header
    # only train/... and val/... metrics reach summary.json, not the per-layer numbers
    assert not any(k.startswith("layer_stats") for k in summary["metrics"])


def test_turned_off_with_null(make_cfg, tmp_path):
    cfg = make_cfg("data=digits", "model=mlp", "model.width=8", "debug=fdr", "callbacks.layer_stats=null")
    assert train(cfg)["status"] == "completed"
    assert not (tmp_path / "run" / "layer_stats.csv").exists()


def test_resnet_layers_and_their_weight_layers(make_cfg, tmp_path):
    cfg = make_cfg(
        "data=digits",
        "model=resnet",
        "model.depth=2",
        "model.width=4",
        "norm=none",
        "logger=none",
        "trainer.max_steps=1",
        "test=false",
        "callbacks.layer_stats.every_n_steps=1",
    )
    train(cfg)
    with (tmp_path / "run" / "layer_stats.csv").open() as file:
        rows = list(csv.DictReader(file))
    layers = sorted({(int(r["depth"]), r["layer"]) for r in rows})
    assert layers[:3] == [
        (1, "blocks.stem"),
        (2, "blocks.stage1_block1.act"),
        (3, "blocks.stage2_block1.act"),
    ]
    with_weights = {r["layer"] for r in rows if r["stat"] == "weight_grad_norm"}
    assert with_weights >= {"blocks.stem", "blocks.stage1_block1.act", "blocks.stage2_block1.act"}


@pytest.mark.slow
def test_wandb_run_of_a_deep_mlp_has_a_section_per_statistic_few_histograms_and_the_table(make_cfg, tmp_path):
    """What W&B shows, read from the offline run's files: a 30-layer MLP gets one section per
    statistic (30 line panels each), histograms of the first, middle and last layer only, the
    plots against depth, and the table `layer_stats/table` holding the CSV's samples."""
    from conftest import wandb_history

    cfg = make_cfg(
        "data=digits",
        "model=mlp",
        "model.depth=30",
        "model.width=8",
        "norm=none",
        "data.train_size=256",
        "logger=wandb",
        "trainer.max_steps=3",
        "test=false",
        "callbacks.layer_stats.every_n_steps=2",
    )
    assert train(cfg)["status"] == "completed"
    run = tmp_path / "run"
    history = wandb_history(run)
    keys = {key for row in history for key in row if key.startswith("layer_stats")}
    sections: dict[str, set[str]] = {}
    for key in keys:
        section, _, rest = key.partition("/")
        sections.setdefault(section, set()).add(rest)
    with (run / "layer_stats.csv").open() as file:
        csv_rows = list(csv.DictReader(file))
    stats = {r["stat"] for r in csv_rows}
    assert len(stats) == 9  # ReLU: no `saturated`
    layers = {f"L{d:02d}" for d in range(1, 31)}
    assert sections == {
        **{f"layer_stats_{stat}": layers for stat in stats},
        "layer_stats_hist": {f"{what}/L{d:02d}" for what in ("pre_act", "act", "grad") for d in (1, 15, 30)},
        "layer_stats": {"table", *(f"{stat}_vs_depth" for stat in stats)},
    }
    assert len(keys) == 9 * 30 + 9 + 9 + 1  # was 9 * 30 line panels in one section + 90 histograms + 9 plots
    samples = [row for row in history if "layer_stats_act_std/L01" in row]
    assert [row["trainer/global_step"] for row in samples] == [0, 2]
    histogram = samples[0]["layer_stats_hist/grad/L30"]
    assert histogram["_type"] == "histogram" and sum(histogram["values"]) > 0
    # the table: a file in the offline run, its rows those of layer_stats.csv
    (logged,) = [row["layer_stats/table"] for row in history if "layer_stats/table" in row]
    assert logged["_type"] == "table-file" and logged["nrows"] == len(csv_rows) == 2 * 30 * 9
    (files,) = run.glob("wandb/offline-run-*/files")
    table = json.loads((files / logged["path"]).read_text())
    assert table["columns"] == ["depth", "layer", "statistic", "value", "step"]
    expected = {(int(r["depth"]), r["layer"], r["stat"], int(r["step"])): float(r["value"]) for r in csv_rows}
    got = {(depth, layer, stat, step): value for depth, layer, stat, value, step in table["data"]}
    assert got.keys() == expected.keys()
    assert all(got[key] == pytest.approx(value, rel=1e-6) for key, value in expected.items())
    assert list((files / "media" / "images" / "layer_stats").glob("act_std_vs_depth_*.png"))


def test_histogram_layers_default_to_first_middle_last():
    from trainlab.callbacks.layer_stats import histogram_depths
    from trainlab.utils.config import ConfigError

    assert histogram_depths(None, 30) == {1, 15, 30} and histogram_depths(None, 2) == {1, 2}
    assert histogram_depths([2, 4], 30) == {2, 4} and histogram_depths("all", 30) is None
    with pytest.raises(ConfigError, match=r"histogram_layers=\[31\].*1\.\.30"):
        histogram_depths([31], 30)
    with pytest.raises(ConfigError, match="histogram_layers='some'"):
        LayerStats(histogram_layers="some")


class HistogramLayerStats(LayerStats):
    """As with a WandbLogger attached; remembers the depths of the histograms taken."""

    taken: list[int]

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self._wandb, self.taken = True, []

    def _histogram(self, layer, what, values, bins=64) -> None:
        super()._histogram(layer, what, values, bins)
        if what in layer.histograms:
            self.taken.append(layer.depth)


@pytest.mark.parametrize("setting, depths", [(None, [1, 3, 5]), ([2], [2]), ("all", [1, 2, 3, 4, 5])])
def test_histograms_only_of_the_chosen_layers(setting, depths, tmp_path):
    """The measurement takes no histogram of the other layers (no work for them on the device)."""
    net = nn.Sequential(*(m for _ in range(5) for m in (nn.Linear(3, 3), nn.ReLU())), nn.Linear(3, 2))
    callback = HistogramLayerStats(every_n_steps=1, plots=False, histogram_layers=setting)
    fit(net, tmp_path, callback)
    assert sorted(set(callback.taken)) == depths and len(callback.taken) == 3 * len(depths)


def test_table_keeps_init_last_and_spaced_steps_within_the_row_limit():
    from trainlab.callbacks.layer_stats.record import table_rows, table_steps

    rows = [
        {"step": step, "layer": f"b{d}", "depth": d, "stat": stat, "value": float(step + d)}
        for step in range(0, 5000, 50)  # 100 samples
        for d in range(1, 31)
        for stat in ("act_std", "grad_std", "dead")
    ]  # 90 rows a sample: 9,000 rows fit W&B's 10,000
    assert table_steps(rows) == list(range(0, 5000, 50))
    steps = table_steps(rows, max_rows=1000)  # 11 samples fit
    assert len(steps) == 11 and steps[0] == 0 and steps[-1] == 4950
    data = table_rows(rows, max_rows=1000)
    assert len(data) == 11 * 90 and data[0] == [1, "b1", "act_std", 1.0, 0]
    assert len(table_steps(rows, max_rows=10)) == 2  # never fewer than init and the last


@pytest.mark.parametrize(
    "shape, value_of, bins",
    [
        # each channel one value: the sample must reach every channel, in equal shares
        ((8, 16, 32, 32), lambda n, c, h, w: c, 16),
        # each pixel its own value and bin: a stride of 8 (131,072 / 16,384) would see only the
        # even pixels, a stride sharing any factor with H*W some of them
        ((128, 1, 32, 32), lambda n, c, h, w: h * 32 + w, 1024),
    ],
)
def test_histogram_sample_visits_every_unit_and_position_evenly(shape, value_of, bins):
    from trainlab.callbacks.layer_stats.measure import HISTOGRAM_SAMPLE
    from trainlab.callbacks.layer_stats.measure import Layer as _Layer

    n, c, h, w = torch.meshgrid(*(torch.arange(s) for s in shape), indexing="ij")
    values = value_of(n, c, h, w).float()
    assert values.numel() > HISTOGRAM_SAMPLE
    callback = LayerStats()
    callback._wandb = True
    layer = _Layer(name="x", depth=1, weight=None)
    callback._histogram(layer, "act", values, bins=bins)
    counts, bounds = layer.histograms["act"]
    assert 0 < counts.sum() <= HISTOGRAM_SAMPLE
    assert bounds.tolist() == [values.min().item(), values.max().item()]
    # the full tensor puts the same number of values in each bin
    shares = counts / counts.sum()
    assert shares.min() > 0.9 / bins and shares.max() < 1.1 / bins


def test_a_compiled_network_runs_eagerly_on_sampled_steps(tmp_path):
    """compile=true: the hooks must neither break the compiled graph (dynamo would compile the
    pieces again per layer shape, up to its recompile limit) nor see a different network."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = tanh_mlp()
    expected = expected_stats(net, *batch())
    net.compile(backend="eager")  # dynamo's tracing and guards, without inductor's code generation
    callback = LayerStats(every_n_steps=2, plots=False)
    fit(net, tmp_path, callback, max_steps=5)
    assert sorted({row["step"] for row in callback.rows}) == [0, 2, 4]
    for depth, stats in expected.items():
        for stat, value in stats.items():
            assert recorded(callback)[depth][stat] == pytest.approx(value, rel=1e-4, abs=1e-6), (depth, stat)
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1  # the training forward, compiled once


def _with_non_finite(values: torch.Tensor) -> torch.Tensor:
    values = values.clone()
    values[::7], values[3], values[5] = math.nan, math.inf, -math.inf
    return values


@pytest.mark.parametrize(
    "values",
    [
        torch.randn(100_000),
        torch.rand(70_000) * 7 - 3,
        torch.arange(1000.0),  # values exactly on the bin edges
        torch.full((500,), 2.5),  # constant: histc's range [1.5, 3.5], the middle bin
        _with_non_finite(torch.randn(10_000)),
    ],
)
def test_histogram_counts_as_torch_histc_does_over_the_finite_values(values):
    from trainlab.callbacks.layer_stats import histogram

    counts, bounds = histogram(values, 64)
    finite = values[torch.isfinite(values)]
    assert torch.equal(counts, torch.histc(finite, 64))
    assert bounds.tolist() == [finite.min().item(), finite.max().item()]


def test_a_histogram_of_no_finite_value_is_empty():
    from trainlab.callbacks.layer_stats import histogram

    counts, _ = histogram(torch.tensor([math.nan, math.inf, -math.inf]), 8)
    assert not counts.any()
    # W&B gets no histogram for it (a diverged layer), and the other layers' as they are
    from trainlab.callbacks.layer_stats.measure import Layer as _Layer
    from trainlab.callbacks.layer_stats.measure import Sample as _Sample

    callback = LayerStats()
    callback._wandb = True
    layers = [_Layer(name=f"x{i}", depth=i + 1, weight=None) for i in range(2)]
    callback._histogram(layers[0], "act", torch.full((4, 3), math.nan))
    callback._histogram(layers[1], "act", torch.ones(4, 3))
    sent = callback._wandb_histograms(_Sample(step=0, layers=layers))
    assert (
        list(sent) == ["layer_stats_hist/act/L02"] and sum(sent["layer_stats_hist/act/L02"].histogram) == 12
    )
