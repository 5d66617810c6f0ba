"""``selfsup study``: study-file validation, a tiny study end to end, resume after a kill,
and ``--map``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import selfsup
from selfsup.cli import main
from selfsup.config import parse_override
from selfsup.errors import ConfigError, SelfsupError
from selfsup.studies import runner
from selfsup.studies.plan import parse_pairs, plan, resolve_params
from selfsup.studies.runner import cell_file, fingerprint, read_cell
from selfsup.studies.spec import Cell, load_study
from selfsup.studies.table import build_rows, caption, markdown
from tiny import TINY

QUICK = [
    "data.limit=64",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "eval.protocols=[knn]",
    "eval.compare_pixels=false",
    "eval.compare_random=false",
]


def _config(values: list[str]) -> dict:
    out: dict = {}
    for text in values:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def write_study(root: Path, **changes) -> Path:
    """A repo-like folder: configs/tiny.yaml and studies/tiny.yaml (one run, two cells)."""
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "tiny.yaml").write_text(yaml.safe_dump(_config(TINY)))
    study = {
        "study": "tiny",
        "params": {"tag": {"default": "t0", "help": "a label"}},
        "runs": [
            {
                "name": "vicreg",
                "config": "configs/tiny.yaml",
                "evals": ["probe"],
                "overrides": ["eval.knn.k=[5]"],
            }
        ],
        "evals": {"probe": {"protocols": ["knn"], "overrides": ["eval.knn.k=[3]"]}},
        "scales": {"quick": {"train": QUICK, "eval": []}, "full": {}},
        "references": [{"run": "vicreg", "eval": "probe", "top1": 50.0, "source": "made up"}],
        "figures": [{"kind": "accuracy_vs_compute", "eval": "probe"}],
        **changes,
    }
    (root / "studies").mkdir(exist_ok=True)
    path = root / "studies" / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runz": []}, "unknown key 'runz'; valid keys: study, description, params, runs"),
        (
            {"runs": [{"name": "a", "config": "configs/tiny.yaml", "epochs": 3}]},
            "runs[0]: unknown key 'epochs'; valid keys: name, command, config",
        ),
        (
            {"runs": [{"name": "a", "config": "configs/nope.yaml"}]},
            "'configs/nope.yaml' does not exist",
        ),
        (
            {"runs": [{"name": "a", "config": "configs/tiny.yaml", "command": "train"}]},
            "command='train'; valid: pretrain, supervised, joint, faces",
        ),
        (
            {"runs": [{"name": "a", "config": "configs/tiny.yaml", "evals": ["lin"]}]},
            "evals='lin'; valid: own, probe",
        ),
        (
            {"evals": {"probe": {"protocols": ["knn"], "overrides": ["train.lr=1"]}}},
            "'train.lr=1' is not an eval.* key",
        ),
        (
            {"evals": {"probe": {"protocol": ["knn"]}}},
            "unknown key 'protocol'; valid keys: protocols",
        ),
        ({"scales": {"quick": {"train": []}}}, "scales: missing key 'full'"),
        (
            {"scales": {"quick": {"trian": []}, "full": {}}},
            "unknown key 'trian'; valid keys: train, eval",
        ),
        ({"figures": [{"kind": "bars"}]}, "kind='bars'; valid: accuracy_vs_compute, curves, tsne"),
        # issue #22.1: a run name became out/runs/NAME, then rmtree'd; absolute or climbing
        # names pointed anywhere
        (
            {"runs": [{"name": "/tmp/victim", "config": "configs/tiny.yaml"}]},
            "runs[0].name='/tmp/victim' is not a valid name",
        ),
        (
            {"runs": [{"name": "../../victim", "config": "configs/tiny.yaml"}]},
            "runs[0].name='../../victim' is not a valid name",
        ),
        ({"runs": [{"name": "..", "config": "configs/tiny.yaml"}]}, "is not a valid name"),
        ({"evals": {"../x": {"protocols": ["knn"]}}}, "evals='../x' is not a valid name"),
    ],
)
def test_bad_study_file_names_key_and_valid_keys(tmp_path, changes, message) -> None:
    path = write_study(tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        load_study(path, tmp_path)
    assert message in str(err.value)


def test_a_hostile_run_name_deletes_nothing_outside_the_study(tmp_path, capsys) -> None:
    """Issue #22.1 end to end: the study is refused before any cell runs, and the directory
    the name pointed at (with a file in it) is still there."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    repo = tmp_path / "repo"
    path = write_study(repo, runs=[{"name": str(victim), "config": "configs/tiny.yaml"}])
    assert main(_study_cmd(path, tmp_path / "out")) == 2
    assert "is not a valid name" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "precious"


def test_map_and_params_are_checked(tmp_path) -> None:
    study = load_study(write_study(tmp_path), tmp_path)
    runs = tmp_path / "out" / "runs"
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar9'; valid: .*cifar10, cifar100"):
        plan(study, "quick", {"cifar9": "synthetic"}, {}, runs, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'; valid: .*cifar10"):
        plan(study, "quick", {"synthetic": "mnist"}, {}, runs, tmp_path)
    with pytest.raises(ConfigError, match="tiny does not use cifar10; it uses synthetic"):
        plan(study, "quick", {"cifar10": "synthetic"}, {}, runs, tmp_path)
    with pytest.raises(
        ConfigError, match="--param size: tiny declares no such parameter; valid: tag"
    ):
        resolve_params(study, {"size": "3"})
    with pytest.raises(ConfigError, match="must look like NAME=VALUE"):
        parse_pairs(["cifar10"], "--map")
    study.params["weights"] = {"help": "a checkpoint"}
    with pytest.raises(ConfigError, match="needs --param weights=VALUE"):
        resolve_params(study, {})


def test_map_changes_the_dataset_and_the_caption(tmp_path) -> None:
    study = load_study(write_study(tmp_path), tmp_path)
    study.evals["probe"].datasets = ["synthetic"]
    mapping = {"synthetic": "fashion-mnist"}
    train, probe = plan(study, "quick", mapping, {}, tmp_path / "runs", tmp_path)
    assert train.overrides[-1] == "data.dataset=fashion-mnist"
    assert probe.datasets == ["fashion-mnist"] and probe.overrides == ["eval.knn.k=[3]"]
    assert train.overrides[:-1] == ["eval.knn.k=[5]", *QUICK]  # the scale's after the run's
    text = caption(study, "quick", mapping, {"tag": "t0"})
    assert "quick scale" in text and "synthetic → fashion-mnist" in text and "tag=t0" in text
    assert "synthetic → " not in caption(study, "full", {}, {})


def _study_cmd(path: Path, out: Path, *extra: str) -> list[str]:
    return ["study", str(path), "--scale", "quick", "--out", str(out), *extra]


def test_tiny_study_end_to_end_with_map(tmp_path, monkeypatch, capsys) -> None:
    from fakedata import write_fashion_mnist

    write_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=96, n_test=40)
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    path, out = write_study(tmp_path), tmp_path / "out"
    assert main(_study_cmd(path, out, "--map", "synthetic=fashion-mnist")) == 0
    printed = capsys.readouterr().out
    assert "[1/2] vicreg/train: finished in" in printed and "ETA" in printed
    state = json.loads((out / "study.json").read_text())
    assert state["scale"] == "quick" and state["map"] == {"synthetic": "fashion-mnist"}
    assert {c: e["state"] for c, e in state["cells"].items()} == {
        "vicreg/train": "finished",
        "vicreg/probe": "finished",
    }
    saved = yaml.safe_load((out / "runs" / "vicreg" / "config.yaml").read_text())
    assert saved["data"]["dataset"] == "fashion-mnist" and saved["eval"]["knn"]["k"] == [5]
    table = (out / "table.md").read_text()
    assert "synthetic → fashion-mnist" in table and "[1] made up" in table
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert len(rows) == 1  # the probe's one measurement: k=3 (the run's own k=5 is not in it)
    row = rows[0]
    assert (row["run"], row["evaluation"], row["dataset"], row["measure"]) == (
        "vicreg",
        "probe",
        "fashion-mnist",
        "k=3",
    )
    assert 0 <= float(row["top1"]) <= 1 and row["reference_top1"] == "50.0"
    assert float(row["train_s"]) > 0 and float(row["params"]) > 0  # results.json["compute"]
    assert (out / "figures" / "accuracy_vs_compute-0.png").is_file()


def test_killed_study_resumes_without_redoing_finished_cells(tmp_path) -> None:
    path, out = write_study(tmp_path), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(selfsup.__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsup", *_study_cmd(path, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    train_cell, probe_cell = (
        out / "cells" / "vicreg--train.json",
        out / "cells" / "vicreg--probe.json",
    )
    deadline = time.monotonic() + 60
    while not train_cell.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its running cell
    proc.wait()
    assert train_cell.is_file() and not probe_cell.is_file()  # killed inside the second cell
    first = json.loads(train_cell.read_text())
    metrics = (out / "runs" / "vicreg" / "metrics.jsonl").read_text()
    state = json.loads((out / "study.json").read_text())
    assert state["cells"]["vicreg/probe"]["state"] in ("pending", "running")  # killed in it
    probe_attempts = state["cells"]["vicreg/probe"]["attempts"]
    assert main(_study_cmd(path, out)) == 0
    state = json.loads((out / "study.json").read_text())
    assert json.loads(train_cell.read_text())["finished"] == first["finished"]
    assert state["cells"]["vicreg/train"]["attempts"] == 1  # trained once
    probe = state["cells"]["vicreg/probe"]
    assert (probe["state"], probe["attempts"]) == ("finished", probe_attempts + 1)
    assert (out / "runs" / "vicreg" / "metrics.jsonl").read_text() == metrics  # not retrained
    with pytest.raises(SystemExit):  # same --out, other scale: refused, nothing rerun
        main(["study", str(path), "--scale", "fullish", "--out", str(out)])
    assert main(["study", str(path), "--scale", "full", "--out", str(out)]) == 2


def test_rows_take_compute_and_references_where_given(tmp_path) -> None:
    study = load_study(write_study(tmp_path), tmp_path)
    study.references = [
        {
            "run": "vicreg",
            "eval": "probe",
            "protocol": "pseudo-label",
            "ratio": 1.0,
            "top1": 61.3,
            "source": "paper",
        },
    ]
    cells = plan(study, "quick", {}, {}, tmp_path / "runs", tmp_path)
    rec = {"dataset": "synthetic", "protocol": "pseudo-label", "seed": 0, "f1_macro": 0.5}
    records = [
        {**rec, "ratio": r, "init": init, "top1": top1}
        for r, init, top1 in (
            (0.0, "pretrained", 0.6),
            (1.0, "pretrained", 0.7),
            (1.0, "random", 0.5),
        )
    ]
    records[1]["n_pseudo"] = 40  # the pool images kept above the threshold, shown in the row
    done = {"vicreg/train": {"wall_s": 12.0}, "vicreg/probe": {"wall_s": 3.0, "records": records}}
    run = tmp_path / "runs" / "vicreg"
    run.mkdir(parents=True)
    compute = {
        "params": {"backbone": 1.5e6, "total": 2e6, "trainable": 2e6},
        "flops_per_image": 2e8,
        "train_wall_s": 30.0,
        "images_per_s": 900.0,
        "hardware": {"device": "cpu", "gpu": None, "cpu": "cpu", "cpu_count": 2, "torch": "2.14"},
    }
    (run / "results.json").write_text(json.dumps({"evals": [], "compute": compute}))
    rows = build_rows(study, cells, done, tmp_path / "runs", {})
    by_ratio = {r["measure"]: r for r in rows}
    assert set(by_ratio) == {"ratio 1:0", "ratio 1:1, 40 kept"}
    one = by_ratio["ratio 1:1, 40 kept"]
    assert (one["top1"], one["random_top1"], one["reference_top1"]) == (0.7, 0.5, 61.3)
    assert by_ratio["ratio 1:0"]["reference_top1"] is None  # the reference is for ratio 1
    assert (one["params"], one["train_s"], one["eval_s"], one["hardware"]) == (
        1.5e6,
        30.0,
        3.0,
        "cpu (2 CPUs)",
    )
    table = markdown(rows, "caption", {"x/train": "failed: boom"})
    assert "| 1.50M | 200.00M | 900 | cpu (2 CPUs) |" in table and "[1] paper" in table
    assert "- x/train: failed: boom" in table
    (run / "results.json").write_text(json.dumps({"evals": []}))  # no "compute": blank cells
    blank = markdown(build_rows(study, cells, done, tmp_path / "runs", {}), "caption", {})
    assert "params" not in blank and "| 12 s | 3 s |" in blank


def test_finished_cell_survives_reordered_overrides_but_not_changed_ones(tmp_path) -> None:
    cell = Cell("r", "probe", "eval", overrides=["eval.test_limit=5", "eval.knn.k=[3]"])
    path = cell_file(tmp_path, cell)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fingerprint": fingerprint(cell), "records": []}))
    same = Cell("r", "probe", "eval", overrides=["eval.knn.k=[3]", "eval.test_limit=5"])
    assert read_cell(tmp_path, same) is not None
    other = Cell("r", "probe", "eval", overrides=["eval.knn.k=[3]", "eval.test_limit=6"])
    with pytest.raises(SelfsupError, match="was made with other settings"):
        read_cell(tmp_path, other)


def test_missing_command_marks_cell_unavailable_and_blocks_its_evaluations(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_COMMANDS", ["pretrain", "eval"])  # no "faces" here
    cells = [Cell("f", None, "faces", args=["--weights", "w.pt"]), Cell("f", "own", "own")]
    lines: list[str] = []
    state = runner.run_cells(cells, tmp_path / "out", {"scale": "quick"}, tmp_path, lines.append)
    assert state["cells"]["f/train"]["state"] == "unavailable"
    assert "no 'faces' command" in state["cells"]["f/train"]["error"]
    assert state["cells"]["f/own"]["state"] == "blocked"
    assert lines[-1] == "[2/2] f/own: blocked: its run did not finish"
    assert not (tmp_path / "out" / "cells").exists()  # nothing counts as finished


def test_teacher_row_keeps_its_random_init_twin(tmp_path) -> None:
    study = load_study(write_study(tmp_path), tmp_path)
    cells = plan(study, "quick", {}, {}, tmp_path / "runs", tmp_path)
    rec = {"dataset": "synthetic", "protocol": "linear", "seed": 0}
    records = [
        {**rec, "init": "pretrained", "backbone": "teacher", "top1": 0.7},
        {**rec, "init": "pretrained", "backbone": "student", "top1": 0.6},
        {**rec, "init": "random", "top1": 0.5},
    ]
    done = {"vicreg/probe": {"wall_s": 1.0, "records": records}}
    rows = build_rows(study, cells, done, tmp_path / "runs", {})
    got = {(r["measure"], r["top1"], r["random_top1"]) for r in rows}
    assert got == {("EMA teacher", 0.7, 0.5), ("", 0.6, 0.5)}


def test_face_results_become_table_records() -> None:
    """``selfsup faces`` writes identification / verification, not harness records."""
    verification = {
        "pretrained": {"mean": 0.7, "n_pairs": 60, "unseen_people": {"mean": 0.68, "n_pairs": 20}},
        "finetuned": {"mean": 0.95, "unseen_people": {"mean": 0.8}},
    }
    results = {
        "identification": {
            "pretrained": {"knn20_top1": 0.5, "knn1_top1": 0.4},
            "finetuned": {"knn1_top1": 0.9},
            "classifier_top1": 0.8,
        },
        "verification": verification,
    }
    got = [(r["protocol"], r.get("k"), r["top1"]) for r in runner.face_records(results)]
    # issue #24.1: "verification" is on people the fine-tuning never saw; all pairs apart
    assert got == [
        ("knn", 1, 0.4),
        ("knn", 20, 0.5),
        ("verification, unseen people", None, 0.68),
        ("verification, all pairs", None, 0.7),
        ("finetuned knn", 1, 0.9),
        ("finetuned verification, unseen people", None, 0.8),
        ("finetuned verification, all pairs", None, 0.95),
    ]
    assert runner.face_records({}) == []
    from selfsup.studies.table import measure

    first = runner.face_records(results)[2:4]  # the pair counts are the rows' measure
    assert [measure(r) for r in first] == ["20 pairs", "60 pairs"]


def test_a_run_stopped_before_its_plots_is_resumed_not_counted_finished(
    tmp_path, monkeypatch
) -> None:
    """Issue 22.10: a run wrote results.json before its plots, and the runner counts a run
    with results.json as finished: a training cell killed (or failed) while plotting was
    "finished in 0 s" on the rerun and its plots never appeared. results.json is now the last
    file a run writes, so the rerun resumes the run and writes them."""
    from selfsup import pipeline
    from selfsup.config import load_config

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # as a Ctrl-C or SIGTERM while the plots are drawn

    run_dir = tmp_path / "runs" / "vicreg"
    monkeypatch.setattr(pipeline, "save_run_plots", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.pretrain(load_config(None, [*TINY, *QUICK]), run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert not (run_dir / "results.json").exists()
    records = runner.train(Cell("vicreg", None, "pretrain"), run_dir, tmp_path / "log", tmp_path)
    assert records and (run_dir / "results.json").is_file()
    assert list((run_dir / "plots").glob("confusion-*.png"))
