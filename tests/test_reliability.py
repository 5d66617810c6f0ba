"""Runs that survive: mid-epoch checkpoints, kills, SIGTERM, failed writes, file permissions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from selfsup import checkpoint
from selfsup.atomic import write_json_atomic
from selfsup.checkpoint import load_checkpoint
from selfsup.errors import WriteError
from selfsup.pipeline import train_run
from selfsup.train import loop
from test_train import records, setup
from tiny import TINY

ROOT = Path(__file__).resolve().parent.parent


def test_mid_epoch_checkpoint_resumes_exactly(tmp_path, monkeypatch) -> None:
    cfg, data = setup(["train.epochs=3", "train.checkpoint_every=3"])
    full = train_run(loop_method(cfg, data), data.images, cfg, tmp_path / "full")
    calls = {"n": 0}
    real = loop.make_views

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # the 4th step of epoch 1, after the step-6 checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "make_views", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_run(loop_method(cfg, data), data.images, cfg, tmp_path / "cut")
    monkeypatch.setattr(loop, "make_views", real)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 2, 6)  # mid-epoch
    resumed = train_run(loop_method(cfg, data), data.images, cfg, tmp_path / "cut", resume=True)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [r["loss"] for r in records(tmp_path / "cut") if "loss" in r] == [
        r["loss"] for r in records(tmp_path / "full") if "loss" in r
    ]


def loop_method(cfg, data):
    from selfsup.rundir import make_method

    return make_method(cfg, data.channels)


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    cfg, data = setup(["train.epochs=1"])
    train_run(loop_method(cfg, data), data.images, cfg, tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    saved = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    cfg2, _ = setup(["train.epochs=2"])
    with pytest.raises(WriteError, match=r"No space left.*intact"):
        train_run(loop_method(cfg2, data), data.images, cfg2, tmp_path, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == saved  # the previous checkpoint, whole
    assert not list(path.parent.glob("*.tmp"))  # no temporary left behind
    train_run(loop_method(cfg2, data), data.images, cfg2, tmp_path, resume=True)  # and it resumes
    assert load_checkpoint(path)["epoch"] == 2


def test_failed_results_write_keeps_the_previous_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"evals": [1]})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(WriteError, match=r"results\.json"):
        write_json_atomic(path, {"evals": [2]})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"evals": [1]}
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def read_only(monkeypatch):
    """Make ``folder`` read-only for this process, even as root (where chmod stops nothing):
    creating a file or folder in it raises EACCES, as a read-only folder or mount does."""
    import pathlib
    import tempfile

    def deny(folder: Path) -> None:
        def check(where: object) -> None:
            if Path(str(where)).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(13, "Permission denied", str(where))

        real_mkstemp, real_mkdtemp, real_mkdir = tempfile.mkstemp, tempfile.mkdtemp, Path.mkdir

        def mkstemp(*args, dir=None, **kwargs):
            check(dir)
            return real_mkstemp(*args, dir=dir, **kwargs)

        def mkdtemp(*args, dir=None, **kwargs):
            check(dir)
            return real_mkdtemp(*args, dir=dir, **kwargs)

        def mkdir(self, *args, **kwargs):
            if not self.is_dir():
                check(self)
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)

    return deny


def test_a_read_only_folder_is_a_write_error_not_a_traceback(tmp_path, read_only) -> None:
    """Issue #22: atomic.py created its temporary outside its try, so a read-only output or
    data folder gave a raw PermissionError traceback."""
    from fakedata import write_image_folder
    from selfsup.atomic import atomic_folder
    from selfsup.data.sources import load_dataset

    write_image_folder(tmp_path / "pets", ("ant", "bee"), 3, size=(20, 20), seed=0)
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    with pytest.raises(WriteError, match=r"results\.json.*Permission denied"):
        write_json_atomic(tmp_path / "ro" / "results.json", {"evals": []})
    with (
        pytest.raises(WriteError, match=r"Permission denied"),
        atomic_folder(tmp_path / "ro" / "c"),
    ):
        pass
    with pytest.raises(WriteError, match=r"(?s)Permission denied.*data\.root"):
        load_dataset(f"imagefolder:{tmp_path / 'pets'}", root=tmp_path / "ro", image_size=8)
    assert list((tmp_path / "ro").iterdir()) == []


def test_run_files_get_the_umask_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        cfg, data = setup(["train.epochs=1"])
        train_run(loop_method(cfg, data), data.images, cfg, tmp_path)
        write_json_atomic(tmp_path / "results.json", {})
    finally:
        os.umask(old)
    for name in ("checkpoints/last.pt", "results.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import selfsup.data.imagefolder as imagefolder
    from selfsup.atomic import atomic_path
    from selfsup.data.sources import load_dataset
    what, target = sys.argv[1], Path(sys.argv[2])
    if what == "results":  # killed inside the write of results.json
        with atomic_path(target) as tmp:
            tmp.write_bytes(b'{"half": ')
            os.kill(os.getpid(), signal.SIGKILL)
    real = imagefolder.decode
    def decode(path, size):  # killed while the second image decodes
        if path.name == "img001.png":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, size)
    imagefolder.decode = decode
    load_dataset(f"imagefolder:{target}", root=sys.argv[3], image_size=8)
    """
)


def _killed_writer(*args: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, *map(str, args)], env=env)
    assert run.returncode == -signal.SIGKILL


def test_temporaries_a_killed_writer_left_are_removed_by_the_next_write(tmp_path) -> None:
    """Issue 22.10: a write killed midway (SIGKILL; SIGTERM while a dataset decodes) left its
    hidden temporary forever: ``.results.json.*.tmp`` in the run, a decoding cache as large as
    the dataset in the data root. Writers hold a flock on their temporary; the next write of
    the same file (the next build of the folder's cache) removes the ones nobody holds, and
    leaves a live writer's alone."""
    from fakedata import write_image_folder
    from selfsup.atomic import atomic_path
    from selfsup.data.sources import load_dataset

    _killed_writer(Path("results"), tmp_path / "results.json")
    assert len(list(tmp_path.glob(".results.json.*.tmp"))) == 1
    with atomic_path(tmp_path / "results.json") as live:  # a writer at work meanwhile
        live.write_bytes(b"{}")
        write_json_atomic(tmp_path / "results.json", {"top1": 0.5})
        assert list(tmp_path.glob(".results.json.*.tmp")) == [live]
    assert json.loads((tmp_path / "results.json").read_text()) == {}
    assert not list(tmp_path.glob(".*.tmp"))

    write_image_folder(tmp_path / "pets", classes=["cat"], per_class=3, size=8)
    cache = tmp_path / "root" / "cache"
    _killed_writer(Path("decode"), tmp_path / "pets", tmp_path / "root")
    assert len(list(cache.glob(".imagefolder-*.decoding.npy.*.tmp"))) == 1
    pets = load_dataset(f"imagefolder:{tmp_path / 'pets'}", root=tmp_path / "root", image_size=8)
    assert len(pets) == 3
    assert not list(cache.glob(".*"))


# --- real processes: SIGTERM and SIGKILL ----------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    from pathlib import Path
    from selfsup import checkpoint
    from selfsup.train import loop
    mode, marker = sys.argv[1], Path(sys.argv[2])
    real_views, real_save = loop.make_views, checkpoint.torch.save
    def slow_views(*a, **k):  # time to be killed between steps
        time.sleep(0.02)
        return real_views(*a, **k)
    loop.make_views = slow_views
    if mode == "hang-in-save":  # write half a checkpoint, then wait to be killed
        saves = {"n": 0}
        def hanging_save(obj, f):
            saves["n"] += 1
            if saves["n"] == 3:
                f.write(b"half a checkpoint")
                marker.touch()
                time.sleep(60)
            return real_save(obj, f)
        checkpoint.torch.save = hanging_save
    from selfsup.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)
ARGS = [
    *TINY,
    "data.limit=256",
    "train.epochs=4",
    "train.checkpoint_every=3",
    "eval.protocols=[knn]",
    "eval.knn.k=[20]",
    "eval.compare_random=false",
    "eval.compare_pixels=false",
]


def _child(tmp_path: Path, out: Path, mode: str, *extra: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    config = [] if "--resume" in extra else ["--config", "defaults"]
    cmd = [
        sys.executable,
        str(script),
        mode,
        str(tmp_path / f"{out.name}.marker"),
        "pretrain",
        *config,
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "timed out"
        time.sleep(0.01)


def _steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _losses_by_step(run: Path) -> list[tuple[int, float]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted((r["step"], r["loss"]) for r in recs if "loss" in r)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _finish(tmp_path: Path, run: Path) -> None:
    proc = _child(tmp_path, run, "plain", "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def test_sigkill_at_three_points_then_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    reference = tmp_path / "reference"
    proc = _child(tmp_path, reference, "plain")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    want = _final_weights(reference)

    kills = {
        "mid-epoch-1": lambda run: _steps(run) >= 11,  # 8 steps per epoch: inside epoch 1
        "mid-epoch-3": lambda run: _steps(run) >= 29,
        "in-checkpoint-write": lambda run: (tmp_path / f"{run.name}.marker").exists(),
    }
    for name, when in kills.items():
        run = tmp_path / name
        mode = "hang-in-save" if name == "in-checkpoint-write" else "plain"
        proc = _child(tmp_path, run, mode)
        _wait(lambda run=run, when=when: when(run), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_checkpoint(run / "checkpoints" / "last.pt")  # readable after the kill
        _finish(tmp_path, run)
        got = _final_weights(run)
        for key, value in want.items():
            assert torch.equal(got[key], value), (name, key)
        assert not list((run / "checkpoints").glob("*.tmp")), name
        got_log, want_log = _losses_by_step(run), _losses_by_step(reference)
        assert got_log == want_log, name  # every step once, with the uninterrupted run's loss


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path, sig) -> None:
    run = tmp_path / "run"
    proc = _child(tmp_path, run, "plain")
    _wait(lambda: _steps(run) >= 5, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert f"stopped by {sig.name}" in err and "--resume" in err
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] >= 5
    _finish(tmp_path, run)
    assert (run / "results.json").is_file()


def _nan_views_at(monkeypatch, calls_to_poison: set[int]) -> None:
    real, calls = loop.make_views, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        views = real(*args, **kwargs)
        return [v * float("nan") for v in views] if calls["n"] in calls_to_poison else views

    monkeypatch.setattr(loop, "make_views", poisoned)


def test_skip_nonfinite_skips_and_logs_bad_steps(tmp_path, monkeypatch) -> None:
    cfg, data = setup(["train.skip_nonfinite=2"])
    _nan_views_at(monkeypatch, {3})
    method = train_run(loop_method(cfg, data), data.images, cfg, tmp_path)
    recs = records(tmp_path)
    assert [r["step"] for r in recs if "skipped" in r] == [2]
    assert sorted(r["step"] for r in recs) == list(range(8))  # every step accounted for
    assert all(torch.isfinite(p).all() for p in method.parameters())
    # the skipped step's forward left no NaN in the BatchNorm statistics (issue #22)
    assert all(torch.isfinite(b).all() for b in method.buffers() if b.is_floating_point())


def test_more_nonfinite_steps_than_allowed_stop_the_run(tmp_path, monkeypatch) -> None:
    cfg, data = setup(["train.skip_nonfinite=1"])
    _nan_views_at(monkeypatch, {2, 5})
    with pytest.raises(loop.TrainingDiverged, match="skip_nonfinite=1"):
        train_run(loop_method(cfg, data), data.images, cfg, tmp_path)


def _poison_weights_at(method, at_step: int) -> None:
    """After the optimizer step ``at_step`` a weight becomes inf (as a bf16 overflow makes it)
    while that step's loss was finite; every later loss is NaN."""
    real = method.on_step_end

    def poisoned(step: int, total: int) -> None:
        real(step, total)
        if step == at_step:
            with torch.no_grad():
                next(method.parameters()).fill_(float("inf"))

    method.on_step_end = poisoned


@pytest.mark.parametrize(
    ("at_step", "kept"),
    [(5, r"last good checkpoint is .*last\.pt"), (1, "no checkpoint was written yet")],
    ids=["after-a-good-checkpoint", "before-any-checkpoint"],
)
def test_a_checkpoint_of_non_finite_weights_is_never_written(tmp_path, at_step, kept) -> None:
    """Issue #22: with skip_nonfinite the loss steps were skipped, but the epoch's checkpoint
    was written with inf weights (a last.pt had 18 of 62 tensors at inf)."""
    cfg, data = setup(["train.skip_nonfinite=100", "train.checkpoint_every=0"])
    method = loop_method(cfg, data)
    _poison_weights_at(method, at_step)
    with pytest.raises(loop.TrainingDiverged, match=rf"weights .*NaN / inf.*{kept}"):
        train_run(method, data.images, cfg, tmp_path)
    path = tmp_path / "checkpoints" / "last.pt"
    if at_step == 1:
        assert not path.exists()
    else:  # the epoch-0 checkpoint (step 4), finite, is kept
        ckpt = load_checkpoint(path)
        assert ckpt["step"] == 4
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_too_many_skipped_steps_before_any_checkpoint_name_no_checkpoint(tmp_path, monkeypatch):
    """Issue #22: with train.checkpoint_every=0 the message named a last.pt that did not exist."""
    cfg, data = setup(["train.skip_nonfinite=1", "train.checkpoint_every=0"])
    _nan_views_at(monkeypatch, {2, 3})  # both in epoch 0: no checkpoint yet
    with pytest.raises(loop.TrainingDiverged, match="skip_nonfinite=1") as err:
        train_run(loop_method(cfg, data), data.images, cfg, tmp_path)
    assert "last.pt" not in str(err.value) and "no checkpoint was written yet" in str(err.value)


def test_non_finite_starting_weights_are_named_not_blamed_on_the_lr(tmp_path) -> None:
    """Issue #22: backbone.weights= a file holding NaN ended in 'the loss became non-finite ...
    Lower train.lr'."""
    from selfsup.backbones.weights import export_backbone
    from selfsup.errors import CheckpointError

    cfg, data = setup()
    state = loop_method(cfg, data).backbone.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    path = export_backbone(state, tmp_path / "nan.safetensors", "safetensors", {})
    cfg.backbone.weights = str(path)
    with pytest.raises(CheckpointError, match=rf"(?s)starting weights.*{name}.*nan\.safetensors"):
        train_run(loop_method(cfg, data), data.images, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_export_safetensors_then_start_from_it(tmp_path, capsys) -> None:
    from safetensors import safe_open

    from selfsup.cli import main

    run = tmp_path / "run"
    quick = [
        "eval.protocols=[knn]",
        "eval.knn.k=[20]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(run), *TINY, *quick]) == 0
    assert main(["export", str(run)]) == 0
    path = run / "export" / "backbone.safetensors"
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["format"]) == "selfsup-backbone-v1"
        exported = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    trained = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for key, value in exported.items():
        assert torch.equal(value, trained[f"backbone.{key}"]), key
    # a new run starts from the exported weights; the random-init twin does not
    from selfsup.config import load_config
    from selfsup.methods import build_method

    cfg = load_config(None, [*TINY, f"backbone.weights={path}"])
    method = build_method(cfg, in_channels=3, image_size=16, mean=[0.5] * 3, std=[0.2] * 3)
    for key, value in method.backbone.state_dict().items():
        assert torch.equal(value, exported[key]), key


def test_weights_of_another_architecture_name_the_keys(tmp_path) -> None:
    from selfsup.backbones import build_backbone
    from selfsup.backbones.weights import export_backbone, load_backbone_weights
    from selfsup.config import load_config
    from selfsup.errors import CheckpointError

    wide = load_config(
        None, ["backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]"]
    ).backbone
    deep = load_config(
        None, ["backbone.name=small_resnet", "backbone.depths=[1,1,1]", "backbone.widths=[8,16,32]"]
    ).backbone
    path = export_backbone(
        build_backbone(deep, in_channels=3, image_size=16).state_dict(),
        tmp_path / "deep.safetensors",
        "safetensors",
        {},
    )
    with pytest.raises(CheckpointError, match=r"unexpected features\.3\."):
        load_backbone_weights(build_backbone(wide, in_channels=3, image_size=16), path)
    torch.save({"net": _RunsCode()}, tmp_path / "evil.pt")  # a pickle with code is refused
    with pytest.raises(CheckpointError, match="never pickled code"):
        load_backbone_weights(
            build_backbone(wide, in_channels=3, image_size=16), tmp_path / "evil.pt"
        )


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))
