"""``results.json["compute"]``: parameters, FLOPs counted against a hand count, wall time and
throughput of pretraining; the table's compute columns and the accuracy-against-compute plot."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from selfsup.analysis.compute import compute_points, plot_accuracy_vs_compute
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.errors import SelfsupError
from selfsup.evaluate.table import comparison_table
from selfsup.pipeline import evaluate_run, pretrain
from selfsup.rundir import load_run
from selfsup.train.compute import count_params, forward_flops
from tiny import TINY


class ConvLinear(nn.Module):
    """Conv 3->4 (3x3, pad 1) on 8x8, then Linear 256->10: 4*8*8*27 + 256*10 = 9472 MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_flops_are_twice_the_multiply_adds_of_a_known_net() -> None:
    macs = 4 * 8 * 8 * (3 * 3 * 3) + (4 * 8 * 8) * 10
    net = ConvLinear().train()
    assert forward_flops(net, torch.zeros(1, 3, 8, 8)) == 2 * macs
    assert forward_flops(net, torch.zeros(3, 3, 8, 8)) == 3 * 2 * macs  # per batch
    assert net.training  # its mode is restored


def test_params_count_every_value_once() -> None:
    net = ConvLinear()
    assert count_params(net) == (4 * 3 * 9 + 4) + (256 * 10 + 10)
    shared = nn.Sequential(net.fc, net.fc)  # one tensor used twice is counted once
    assert count_params(shared) == 256 * 10 + 10


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny VICReg pretraining (4 steps of 32 images) with a kNN evaluation."""
    cfg = load_config(
        None,
        [
            *TINY,
            "train.device=cpu",
            "train.epochs=1",
            "eval.protocols=[knn]",
            "eval.knn.k=[5]",
            "eval.compare_random=false",
            "eval.compare_pixels=false",
        ],
    )
    path = tmp_path_factory.mktemp("runs") / "vicreg"
    return SimpleNamespace(path=path, results=pretrain(cfg, path))


def test_pretraining_writes_its_compute(run: SimpleNamespace) -> None:
    c = run.results["compute"]
    assert json.loads((run.path / "results.json").read_text())["compute"] == c
    _, method = load_run(run.path)
    assert c["params"]["backbone"] == sum(p.numel() for p in method.backbone.parameters())
    assert c["params"]["total"] == sum(p.numel() for p in method.parameters())
    assert c["params"]["backbone"] < c["params"]["total"]  # + the projector
    assert c["image_size"] == 16
    assert c["flops_per_image"] == forward_flops(method.backbone, torch.zeros(1, 3, 16, 16)) > 0
    # two views' forward and backward through backbone and projector: well over 2 forwards
    assert c["train_step_flops_per_image"] > 2 * c["flops_per_image"]
    assert (c["steps"], c["images_seen"]) == (4, 128)
    assert c["train_flops"] == c["train_step_flops_per_image"] * 128
    assert c["train_wall_s"] > 0
    assert c["images_per_s"] == pytest.approx(128 / c["train_wall_s"], rel=0.01)
    hw = c["hardware"]
    assert hw["torch"] == torch.__version__ and hw["device"] and hw["cpu"]


def test_evaluating_again_keeps_the_compute(run: SimpleNamespace) -> None:
    before = run.results["compute"]
    after = evaluate_run(run.path, protocols=["knn"])
    assert after["compute"] == before


def test_table_shows_compute_columns_when_a_run_has_them(run: SimpleNamespace) -> None:
    older = {**run.results}
    older.pop("compute")
    runs = [("a", run.results), ("b", older)]
    md = comparison_table(runs).splitlines()
    assert "GFLOPs/img" in md[0] and "img/s" in md[0] and "total params (M)" in md[0]
    c = run.results["compute"]
    assert f"{c['params']['total'] / 1e6:.2f}" in md[2]
    assert md[3].rstrip(" |").endswith("-")  # the run without compute
    rows = comparison_table(runs, fmt="csv").splitlines()
    assert rows[0].endswith("backbone params (M),total params (M),GFLOPs/img,train wall (s),img/s")
    assert rows[1].split(",")[-1] == f"{c['images_per_s']:.6g}" and rows[2].endswith(",,,,")
    plain = comparison_table([("b", older)])
    assert "GFLOPs" not in plain  # no run has compute: no columns


def test_accuracy_against_compute(run: SimpleNamespace, tmp_path: Path) -> None:
    cheaper = json.loads(json.dumps(run.results))
    cheaper["compute"]["train_flops"] //= 4
    cheaper["evals"][0]["top1"] = 0.01
    runs = [(str(run.path), run.results), ("cheap", cheaper)]
    ((label, points),) = compute_points(runs).items()
    assert label.startswith("knn k=5")
    assert [p[0] for p in points] == sorted(p[0] for p in points)  # ordered by compute
    assert points[0][1:] == (0.01, "vicreg (cheap)")
    png = plot_accuracy_vs_compute(runs, tmp_path / "acc.png", x="wall")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SelfsupError, match="compute"):
        compute_points([("old", {"evals": run.results["evals"]})])


def test_table_cli_draws_the_compute_plot(run: SimpleNamespace, tmp_path: Path, capsys) -> None:
    png = tmp_path / "plots" / "compute.png"
    assert main(["table", str(run.path), "--plot-compute", str(png)]) == 0
    assert "GFLOPs/img" in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG"
