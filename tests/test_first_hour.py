"""Issue #25, a new user's first hour, driven through the real command: ``--help`` at once and
``--version``; a new run needs ``--config``; a failed start leaves nothing that blocks the
corrected rerun; download advice that can be followed (``data.download=true``, in ``eval``
too); progress in a log file as plain, labelled lines."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import selfsup
from selfsup.cli import main
from selfsup.data import sources
from selfsup.progress import LineProgress
from tiny import TINY

SELFSUP = Path(sys.executable).with_name("selfsup")  # the console script of this environment
QUICK = ["train.epochs=1", "eval.protocols=[knn]", "eval.knn.k=[20]"]
QUICK += ["eval.compare_random=false", "eval.compare_pixels=false"]
HEAVY = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "PIL", "timm")


def start(out: Path, *extra: str, command: str = "pretrain") -> int:
    return main([command, "--config", "defaults", "--out", str(out), *TINY, *extra])


def _cpu_seconds(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """CPU seconds (user + system) the command took: on a loaded machine its wall time says
    more about the other processes than about it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu, done


# --- 25.10: --help at once, --version ------------------------------------------------------


def test_help_takes_well_under_a_second_of_cpu() -> None:
    """It took 5.6 s of CPU (torch, torchvision, scipy imported to print the help)."""
    cpu, done = _cpu_seconds([str(SELFSUP), "--help"])
    assert done.returncode == 0 and "pretrain" in done.stdout and "--version" in done.stdout
    assert cpu < 1.5, f"selfsup --help took {cpu:.2f} s of CPU"


def test_no_help_imports_torch_or_the_other_heavy_modules() -> None:
    code = (
        "import sys\nfrom selfsup.cli import main\n"
        "for cmd in sys.argv[1:]:\n"
        "    try:\n        main([*cmd.split(), '--help'])\n    except SystemExit:\n        pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    commands = ["", "pretrain", "supervised", "eval", "table", "export", "faces", "prepare"]
    commands += ["report", "study", "index", "viz retrieval", "viz curves"]
    done = subprocess.run(
        [sys.executable, "-c", code, *commands], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY []"


def test_faces_help_names_the_default_it_cannot_import(capsys) -> None:
    from selfsup.data.lfw import DEFAULT_MIN_IMAGES

    with pytest.raises(SystemExit):
        main(["faces", "--help"])
    assert f"DEFAULT_MIN_IMAGES, {DEFAULT_MIN_IMAGES})" in " ".join(capsys.readouterr().out.split())


def test_version_prints_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"selfsup {selfsup.__version__}"
    assert selfsup.__version__ == importlib.metadata.version("selfsup")


# --- 25.2: a new run needs --config ----------------------------------------------------------


@pytest.mark.parametrize("command", ["pretrain", "supervised", "joint"])
def test_a_new_run_without_config_is_refused_with_the_shipped_configs(
    tmp_path, capsys, command
) -> None:
    """It silently trained the built-in defaults (ResNet-18 on synthetic data, 6.5 h)."""
    out = tmp_path / "run"
    assert main([command, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "--config" in err and "--config defaults" in err and "Traceback" not in err
    assert "configs/demo.yaml" in err and "vicreg" in err and "fashion-mnist/" in err
    assert not out.exists()


def test_help_says_config_is_required_and_how_to_ask_for_the_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "required for a new run" in text and "--config defaults" in text


# --- 25.7: a failed start leaves nothing in the way ------------------------------------------


def test_a_start_that_fails_after_writing_leaves_no_directory(tmp_path, capsys) -> None:
    """A missing backbone.weights file fails once config.yaml and env.json are written: they
    blocked the corrected rerun ("already holds files; pass --resume")."""
    out = tmp_path / "run"
    assert start(out, *QUICK, f"backbone.weights={tmp_path / 'missing.pt'}") == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not out.exists()
    assert start(out, *QUICK) == 0


def test_a_failed_start_in_an_existing_folder_leaves_it_as_it_was(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    assert start(out, *QUICK, f"backbone.weights={tmp_path / 'missing.pt'}") == 2
    assert list(out.iterdir()) == []
    assert start(out, *QUICK) == 0


def test_a_start_killed_before_its_first_checkpoint_is_replaced_by_the_rerun(
    tmp_path, capsys
) -> None:
    """What a SIGKILL before the first checkpoint leaves: config.yaml, env.json, metrics of a
    few steps, an empty checkpoints/. Nothing to resume; the rerun replaces it."""
    out = tmp_path / "run"
    assert start(out, *QUICK) == 0
    (out / "checkpoints" / "last.pt").unlink()
    (out / "results.json").unlink()
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "first checkpoint" in err and "without --resume" in err
    assert start(out, *QUICK) == 0
    assert (out / "results.json").is_file()


def test_an_unfinished_run_is_refused_naming_resume_and_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert start(out, *QUICK) == 0
    (out / "results.json").unlink()  # a checkpoint, no results: training did not finish
    capsys.readouterr()
    assert start(out, *QUICK) == 2
    err = capsys.readouterr().err
    assert "unfinished run" in err and "--resume continues" in err
    assert "--overwrite replaces" in err


def test_a_folder_without_a_run_is_refused_without_advising_resume(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert start(out, *QUICK) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "pass --resume" not in err
    assert (out / "notes.txt").read_text() == "mine"


# --- 25.6: download advice that can be followed ---------------------------------------------


def test_missing_data_advice_names_data_download_and_no_flag(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert start(out, "data.dataset=cifar10", f"data.root={tmp_path / 'data'}") == 2
    err = capsys.readouterr().err
    assert "data.download=true" in err and "--download" not in err
    assert not out.exists()  # the failed start left nothing either


def test_eval_on_another_dataset_can_enable_downloads(tmp_path, capsys, monkeypatch) -> None:
    """`eval RUN --dataset cifar10` could not download at all (only eval.* keys)."""
    out = tmp_path / "run"
    assert start(out, *QUICK, f"data.root={tmp_path / 'data'}") == 0
    capsys.readouterr()
    cifar = ["eval", str(out), "--protocol", "knn", "--dataset", "cifar10"]
    assert main(cifar) == 2
    err = capsys.readouterr().err
    assert "data.download=true" in err and "--download" not in err
    asked: list[bool] = []
    synthetic = sources._DATASETS.get("synthetic")

    def fake_cifar(req):  # (no network here) what a download would then read
        asked.append(req.download)
        return synthetic(dataclasses.replace(req, image_size=16))

    monkeypatch.setitem(sources._DATASETS._items, "cifar10", fake_cifar)
    assert main([*cifar, "data.download=true"]) == 0
    assert asked and all(asked)
    recs = json.loads((out / "results.json").read_text())["evals"]
    assert any(r["dataset"] == "cifar10" for r in recs)
    assert main(["eval", str(out), "data.limit=5"]) == 2  # other data.* keys stay fixed
    assert "data.download" in capsys.readouterr().err


# --- 25.9: progress in a log file -----------------------------------------------------------


def test_progress_in_a_log_is_plain_labelled_lines(tmp_path, capsys) -> None:
    """Not a terminal (capsys): no carriage-return updates, a few lines per bar, each saying
    what it measures; the fine-tuning arms say which lr."""
    out = tmp_path / "run"
    assert start(out, *QUICK, "train.epochs=2", "train.progress=true") == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("pretrain vicreg")]
    assert 1 <= len(lines) <= 11 and "8/8" in lines[-1], err
    tune = ["eval", str(out), "--protocol", "finetune", "--fraction", "0.5"]
    assert main([*tune, "eval.finetune.epochs=1", "eval.finetune.lrs=[0.05,0.1]"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    for lr in ("0.05", "0.1"):
        assert any("finetune" in line and f"lr={lr} " in line for line in err.splitlines()), err


def test_line_progress_prints_every_tenth_and_every_half_minute(capsys) -> None:
    clock = iter(float(t) for t in [0, *range(0, 100_000, 10)])
    bar = LineProgress(1000, "pretrain vicreg", unit="step", clock=lambda: next(clock))
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("pretrain vicreg: ") for line in lines)
    assert lines[-1].startswith("pretrain vicreg: 1000/1000 steps (100%)")
    # each 10 updates take 100 s here: a line at each 30 s besides each tenth of the way
    assert len(lines) > 100 and len(lines) == len(set(lines))


# --- 25.5: --resume on a finished run leaves it as it was ---------------------------------


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_changes_no_file(tmp_path, capsys) -> None:
    """Before: a 100% bar, every evaluation redone, env.json's command replaced by the resume's
    and the last epoch's monitor record dropped from metrics.jsonl."""
    out = tmp_path / "run"
    assert start(out, *QUICK, "eval.monitor_every=1") == 0
    before = _files(out)
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume"]) == 0
    said = capsys.readouterr().out
    assert "already complete" in said and "train.epochs" in said
    assert _files(out) == before


def test_resuming_to_train_longer_keeps_the_first_command_and_the_monitor(tmp_path) -> None:
    """The real command twice (env.json records the process's own command line)."""
    out = tmp_path / "run"
    first = [str(SELFSUP), "pretrain", "--config", "defaults", "--out", str(out), *TINY, *QUICK]
    subprocess.run([*first, "eval.monitor_every=1"], check=True, capture_output=True)
    again = [str(SELFSUP), "pretrain", "--out", str(out), "--resume", "train.epochs=2"]
    subprocess.run(again, check=True, capture_output=True)
    env = json.loads((out / "env.json").read_text())
    assert env["command"][1:4] == ["pretrain", "--config", "defaults"]
    assert [r["command"][1:] for r in env["resumes"]] == [again[1:]]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if "monitor_knn_top1" in r] == [1, 2]


# --- 25.10: viz on an SSL run that saved nothing special ---------------------------------


def test_tsne_of_a_finished_run_without_saved_embeddings_embeds_it_now(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert start(out, *QUICK) == 0
    capsys.readouterr()
    assert main(["viz", "tsne", str(out)]) == 0
    said = capsys.readouterr().out
    assert "embedded the final checkpoint (epoch 1)" in said and "viz.embed_epochs" in said
    assert (out / "embeddings" / "epoch-0001.npy").is_file() and (out / "plots/tsne.png").is_file()


def test_curves_of_an_ssl_run_say_which_curves_exist_and_how_to_log_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert start(out, *QUICK) == 0
    capsys.readouterr()
    assert main(["viz", "curves", str(out)]) == 2
    err = capsys.readouterr().err
    assert "compare_curves" not in err and "eval.val_images" in err and "curves.png" in err
