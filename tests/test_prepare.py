"""Tests of `selfsup prepare` (a prepared, memory-mapped cache as the source cache:PATH) and of
the Batches reader that trains from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import selfsup.data.prepare as prepare
from fakedata import write_image_folder
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data.sources import load_dataset
from selfsup.errors import ConfigError, DataError, WriteError
from selfsup.pipeline import resolve, train_run
from selfsup.rundir import make_method
from selfsup.train import loop
from selfsup.train.loop import BatchStream, place_images
from selfsup.train.reader import Batches, free_device_memory
from test_sources import _mapped_files
from tiny import TINY

SRC = Path(__file__).resolve().parents[1] / "src"


def _folder(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """root/train/{ant,bee,cow}/ with PNGs of odd sizes plus JPEGs, root/test/ smaller."""
    for split, n in (("train", per_class), ("test", 2)):
        write_image_folder(root / split, ("ant", "bee", "cow"), n, size=(23, 17), seed=seed)
        rng = np.random.default_rng(seed + 1)
        for name in ("ant", "cow"):
            pixels = rng.integers(0, 256, (15, 29, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / "photo.jpg", quality=90)
    return root


def test_prepared_cache_equals_imagefolder_decoding(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "pets")
    counts = prepare.prepare_image_folder(folder, 12, tmp_path / "cache", workers=2)
    assert counts == {"train": 20, "test": 8}  # 3 classes x 6 PNGs + 2 JPEGs
    for split in ("train", "test"):
        cached = load_dataset(f"cache:{tmp_path / 'cache'}", split)
        decoded = load_dataset(f"imagefolder:{folder}", split, root=tmp_path, image_size=12)
        assert cached.images.shape == (counts[split], 3, 12, 12)
        assert torch.equal(cached.images, decoded.images)
        assert torch.equal(cached.labels, decoded.labels)
        assert cached.classes == decoded.classes == ["ant", "bee", "cow"]
        assert cached.files == decoded.files and "ant/photo.jpg" in cached.files
        assert cached.name == f"cache:{tmp_path / 'cache'}" and cached.split == split
        assert str(tmp_path / "cache" / split / "images.npy") in _mapped_files(cached.images)
    meta = json.loads((tmp_path / "cache" / "train" / "meta.json").read_text())
    assert meta["paths"][:3] == ["ant/img000.png", "ant/img001.png", "ant/img002.png"]
    assert "ant/photo.jpg" in meta["paths"] and len(meta["paths"]) == 20


def test_flat_folder_is_unlabeled_and_has_no_test_split(tmp_path: Path) -> None:
    written = write_image_folder(tmp_path / "flat", None, 5, size=9)
    assert (
        main(
            [
                "prepare",
                f"imagefolder:{tmp_path / 'flat'}",
                "--size",
                "9",
                "--out",
                str(tmp_path / "c"),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    data = load_dataset(f"cache:{tmp_path / 'c'}")
    expected = np.stack(written["rgb"]).transpose(0, 3, 1, 2)
    assert np.array_equal(data.images.numpy(), expected)  # 9 px: decoded without resizing
    assert data.labels.tolist() == [-1] * 5 and data.classes == []
    with pytest.raises(DataError, match="no split 'test'; it has: train"):
        load_dataset(f"cache:{tmp_path / 'c'}", "test")
    with pytest.raises(ConfigError, match=r"9-px images.*data.image_size=9"):
        load_dataset(f"cache:{tmp_path / 'c'}", image_size=16)


def test_corrupt_images_are_skipped_with_a_count_or_fail_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path / "pets", per_class=2)
    (folder / "train" / "bee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    counts = prepare.prepare_image_folder(folder, 8, tmp_path / "c", workers=2)
    assert counts["train"] == 8
    assert "skipped 1 bad image file(s)" in capsys.readouterr().err
    report = json.loads((tmp_path / "c" / "train" / "bad.json").read_text())
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.jpg"]
    assert len(load_dataset(f"cache:{tmp_path / 'c'}")) == 8
    assert "1 bad image file(s) were left out" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"bad image .*broken\.jpg"):
        load_dataset(f"cache:{tmp_path / 'c'}", on_bad_image="fail")
    with pytest.raises(DataError, match=r"bad image .*broken\.jpg"):
        prepare.prepare_image_folder(folder, 8, tmp_path / "c2", on_bad_image="fail")
    assert not (tmp_path / "c2").exists()
    assert not list(tmp_path.glob(".c2.*"))


def test_an_error_part_way_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    folder = _folder(tmp_path / "pets")
    real = prepare.build_cache

    def fail_on_test_split(found, *args, **kwargs) -> None:
        real(found, *args, **kwargs)
        if found.folder.name == "test":  # the train split is complete by now
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepare, "build_cache", fail_on_test_split)
    with pytest.raises(WriteError, match="No space left"):
        prepare.prepare_image_folder(folder, 8, tmp_path / "c", workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"]  # nothing, not even a temp
    with pytest.raises(DataError, match=r"no prepared cache at .*selfsup prepare"):
        load_dataset(f"cache:{tmp_path / 'c'}")


KILLER = """
import os, signal, sys
import selfsup.data.imagefolder as imagefolder
from selfsup.data.prepare import prepare_image_folder
real, calls = imagefolder.decode, []
def decode(*args):
    calls.append(1)
    if len(calls) == 7:  # SIGKILL: no exception handler, no cleanup runs
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
imagefolder.decode = decode
prepare_image_folder(sys.argv[1], 8, sys.argv[2], workers=1, overwrite=True)
"""


def test_a_killed_prepare_leaves_no_cache_that_loads(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "pets")
    out = tmp_path / "c"
    prepare.prepare_image_folder(folder, 8, out, workers=1)
    first = load_dataset(f"cache:{out}").images.clone()
    (folder / "train" / "ant" / "photo.jpg").unlink()  # the next prepare would differ
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(folder), str(out)], env=env)
    assert proc.returncode == -9
    assert list(tmp_path.glob(".c.*.tmp"))  # the kill left its hidden temporary folder
    assert torch.equal(load_dataset(f"cache:{out}").images, first)  # the old cache, whole
    prepare.prepare_image_folder(folder, 8, out, workers=1, overwrite=True)
    assert len(load_dataset(f"cache:{out}")) == len(first) - 1
    assert not list(tmp_path.glob(".c.*"))  # the leftover was removed
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        prepare.prepare_image_folder(folder, 8, out)


SWAP_KILLER = """
import os, signal, sys
from pathlib import Path
from selfsup.data.prepare import prepare_image_folder
out, real = Path(sys.argv[2]), os.replace
def replace(src, dst):
    if Path(dst) == out:  # the new cache onto CACHE: the old one was moved aside just before
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
prepare_image_folder(sys.argv[1], 8, sys.argv[2], workers=1, overwrite=True)
"""


def test_prepare_overwrite_killed_between_its_two_renames_keeps_the_old_cache(
    tmp_path: Path,
) -> None:
    """Issue #22: the old cache was renamed aside, the kill came before the new one was renamed
    into place, and the next prepare (or any cleanup) deleted the old one with the leftovers."""
    folder = _folder(tmp_path / "pets")
    out = tmp_path / "c"
    prepare.prepare_image_folder(folder, 8, out, workers=1)
    first = load_dataset(f"cache:{out}").images.clone()
    (folder / "train" / "ant" / "photo.jpg").unlink()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", SWAP_KILLER, str(folder), str(out)], env=env)
    assert proc.returncode == -9
    assert torch.equal(load_dataset(f"cache:{out}").images, first)  # the old cache, whole
    prepare.prepare_image_folder(folder, 8, out, workers=1, overwrite=True)
    assert len(load_dataset(f"cache:{out}")) == len(first) - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "pets"]  # no leftovers


def test_a_failed_second_rename_puts_the_old_cache_back(tmp_path: Path, monkeypatch) -> None:
    folder = _folder(tmp_path / "pets")
    out = tmp_path / "c"
    prepare.prepare_image_folder(folder, 8, out, workers=1)
    first = load_dataset(f"cache:{out}").images.clone()
    real = os.replace

    def failing(src, dst) -> None:
        if Path(dst) == out:
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(WriteError, match="Input/output error"):
        prepare.prepare_image_folder(folder, 8, out, workers=1, overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_dataset(f"cache:{out}").images, first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "pets"]


def test_training_from_the_cache_equals_training_in_memory(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imgs", ("a", "b"), 32, size=16)
    prepare.prepare_image_folder(tmp_path / "imgs", 16, tmp_path / "c", workers=1)
    cfg = load_config(None, [*TINY, f"data.dataset=cache:{tmp_path / 'c'}", "train.epochs=1"])
    data = load_dataset(cfg.data.dataset)
    cfg = resolve(cfg, data)
    assert _mapped_files(data.images)  # trained straight from the memmap
    runs = []
    for name, images in (("memmap", data.images), ("memory", data.images.clone())):
        method = train_run(make_method(cfg, 3), images, cfg, tmp_path / name)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs.append((method.state_dict(), [json.loads(line)["loss"] for line in lines]))
    (a, losses_a), (b, losses_b) = runs
    assert len(losses_a) == 2 and losses_a == losses_b
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("kind", ["tensor", "memmap"])
def test_batches_are_direct_indexing_in_order(tmp_path: Path, kind: str) -> None:
    images = torch.randint(0, 256, (50, 3, 5, 4), dtype=torch.uint8)
    np.save(tmp_path / "x.npy", images.numpy())
    source = images if kind == "tensor" else np.load(tmp_path / "x.npy", mmap_mode="r")
    stream = BatchStream(50, 8, seed=3, rank=1, world=2)
    index_batches = list(stream.epoch(0)) + list(stream.epoch(1))
    seen, buffers = [], set()
    with Batches(source, index_batches, "cpu") as reader:
        for batch in reader:
            seen.append(batch.clone())
            buffers.add(batch.data_ptr())
    assert len(seen) == len(index_batches) == 12
    for idx, batch in zip(index_batches, seen, strict=True):
        assert torch.equal(batch, images[idx])
    assert len(buffers) == 2  # two reusable buffers, not a new tensor per batch


_OPENMP_PROBE = """
import os, torch
from selfsup.train.reader import Batches
torch.set_num_threads(2)
torch.ones(1 << 22).mul_(2)  # the main thread's OpenMP team exists
tasks = lambda: len(os.listdir("/proc/self/task"))
before = tasks()
images = torch.randint(0, 256, (4096, 3, 32, 32), dtype=torch.uint8)
during = []
with Batches(images, [torch.randperm(4096)[:1024] for _ in range(6)], "cpu") as reader:
    for batch in reader:
        during.append(tasks())
print(before, max(during))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_the_reader_thread_starts_no_second_openmp_team() -> None:
    """The reader gathers with numpy: a torch op in its thread starts a second OpenMP team whose
    threads spin on the training step's cores (30% of every demo epoch on 2 cores)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _OPENMP_PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    before, during = int(out[0]), int(out[1])
    assert during == before + 1  # the reader thread itself, and no OpenMP workers of its own


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "selfsup-batches"]


def test_batches_stop_cleanly_on_errors() -> None:
    images = torch.zeros(20, 1, 2, 2, dtype=torch.uint8)
    good = [torch.arange(4) + 4 * k for k in range(3)]
    got = []
    with pytest.raises(IndexError), Batches(images, [*good, torch.tensor([0, 99])], "cpu") as r:
        got.extend(b.clone() for b in r)  # a bad index: raised here, where batches are used
    assert len(got) == 3 and not _reader_threads()
    with pytest.raises(ValueError, match="in the step"), Batches(images, good * 50, "cpu") as r:
        for _ in r:
            raise ValueError("in the step")
    assert not _reader_threads()
    reader = iter(Batches(images, good * 50, "cpu"))
    next(reader)
    reader.close()  # a loop that stops early
    assert not _reader_threads()


def test_host_fallback_keeps_images_unpinned_and_counts_cached_blocks(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100, 1000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 500)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 200)
    assert free_device_memory(torch.device("cuda")) == 400
    images = torch.zeros(1000, 1, 1, 1, dtype=torch.uint8)  # over half of what is free
    assert place_images(images, torch.device("cuda")) is images  # not copied, not pinned whole


def test_auto_leaves_room_for_the_model_and_data_on_device_overrides_it(monkeypatch) -> None:
    """Issue #26.7: the images went to the GPU when they took under half of its free memory,
    whatever the model needed. ``data.on_device=auto`` now first sets aside the model's
    footprint (weights, gradients, optimizer state: ``model_footprint``) and keeps the images
    on the host unless they fit in half of what is left; ``always`` / ``never`` decide."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000, 4000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 0)
    cuda, images = torch.device("cuda"), torch.zeros(400, 1, 1, 1, dtype=torch.uint8)
    assert loop.images_on_device(images, cuda, "auto", room=0)  # 400 of 1000 free: as before
    # a model of 300 bytes: 400 of the data + 300 is under the 1000 free, but leaves the
    # activations less than the data takes
    assert not loop.images_on_device(images, cuda, "auto", room=300)
    assert place_images(images, cuda, on_device="auto", room=300) is images  # on the host
    assert not loop.images_on_device(images, cuda, "auto", room=900)  # model + data > free
    assert loop.images_on_device(images, cuda, "always", room=900)  # the user's call
    one = images[:1]
    assert not loop.images_on_device(one, cuda, "never", room=0)
    assert place_images(one, cuda, on_device="never") is one
    assert not loop.images_on_device(images, torch.device("cpu"), "always", room=0)


def test_the_model_footprint_counts_weights_gradients_and_optimizer_state() -> None:
    from selfsup.train.optim import model_footprint

    net = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.BatchNorm1d(10))
    trainable = (110 + 20) * 4  # the linear layer's weight and bias, BN's affine
    weights = trainable + 20 * 4 + 8  # + BN's running mean and var, and its int64 counter
    assert model_footprint(net, "sgd") == weights + 2 * trainable  # + gradients + momentum
    assert model_footprint(net, "adamw") == weights + 3 * trainable  # + two moments
    net[0].requires_grad_(False)  # a frozen teacher: weights only
    assert model_footprint(net, "lars") == weights + 2 * 20 * 4


def test_data_on_device_is_a_setting_that_reaches_the_trainer(monkeypatch) -> None:
    from selfsup import pipeline
    from selfsup.config import load_config

    with pytest.raises(ConfigError, match=r"data\.on_device.*auto.*always.*never"):
        load_config(None, ["data.on_device=sometimes"])
    cfg = load_config(None, ["data.on_device=never"])
    seen = {}
    monkeypatch.setattr(pipeline, "fit", lambda *args, **kwargs: seen.update(kwargs))
    pipeline.train_run(None, torch.zeros(1), cfg, Path("unused"))
    assert seen["on_device"] == "never"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned buffers need CUDA")
def test_cuda_batches_come_from_pinned_buffers(tmp_path: Path, monkeypatch) -> None:
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    np.save(tmp_path / "x.npy", images.numpy())
    source = torch.from_numpy(np.load(tmp_path / "x.npy", mmap_mode="c"))
    index_batches = list(BatchStream(64, 16, seed=0).epoch(0)) * 3
    with Batches(source, index_batches, "cuda") as reader:
        for idx, batch in zip(index_batches, reader, strict=True):
            assert batch.is_cuda and torch.equal(batch.cpu(), images[idx])
    assert all(b.host is not None and b.host.is_pinned() for b in reader.buffers)
    big = torch.zeros(1 << 20, dtype=torch.uint8)  # over half of what is free
    monkeypatch.setattr(loop, "free_device_memory", lambda device: 1 << 20)
    assert place_images(big, torch.device("cuda")) is big
    assert place_images(big[:1000], torch.device("cuda")).is_cuda


@pytest.mark.parametrize("size", [0, 100_000])
def test_a_size_outside_one_to_max_side_is_refused_before_decoding(tmp_path: Path, size) -> None:
    """``--size 100000`` (30 GB per image) is refused like ``data.image_size=100000`` (issue
    22.10), before any image is looked at."""
    write_image_folder(tmp_path / "f", classes=["a"], per_class=1)
    with pytest.raises(ConfigError, match=rf"--size must be .* 4096.*got {size}"):
        prepare.prepare_image_folder(tmp_path / "f", size, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
