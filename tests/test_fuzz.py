"""Fuzz tests (hypothesis) of every reader that takes a file from a user (issue #22): IDX files,
CIFAR batch and meta files, STL-10 binaries, an image folder's images, safetensors and other
weight files, study files and config files.

Each reader gets arbitrary bytes, and bytes shaped like its format (a valid header, a pickle
of the right kind of dict, YAML with the right keys) so that the fuzzer gets past the first
check. Whatever it gets, it loads or raises a :class:`DataError`, :class:`CheckpointError` or
:class:`ConfigError` (whose message the CLI prints): never another exception, a hang (every
example has a deadline) or code execution (pickles and YAML that name a callable which would
leave a mark on disk, checked after every example). The default, 200 examples per reader, runs
the file in about 10 s on one core; ``SELFSUP_FUZZ_EXAMPLES=3000`` fuzzes longer.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import selfsup.data.sources as sources
from selfsup.backbones import build_backbone
from selfsup.backbones.weights import load_backbone_weights
from selfsup.config import config_to_dict, load_config
from selfsup.data import formats
from selfsup.errors import CheckpointError, ConfigError, DataError
from selfsup.studies import spec
from selfsup.studies.spec import load_study
from tiny import TINY

USER_ERRORS = (DataError, CheckpointError, ConfigError)
EXAMPLES = int(os.environ.get("SELFSUP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=10),  # a reader that hangs fails here instead of never ending
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CANARY = Path(tempfile.gettempdir()) / f"selfsup-fuzz-canary-{os.getpid()}"
"""What a pickle or YAML document that ran code would create (checked after every example)."""


@pytest.fixture(autouse=True)
def _no_system_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [])
    monkeypatch.delenv("SELFSUP_DATA", raising=False)
    yield
    assert not CANARY.exists(), "a fuzzed file ran code"


@contextmanager
def folder() -> Iterator[Path]:
    """A fresh folder per example (hypothesis runs many examples in one test call)."""
    with tempfile.TemporaryDirectory(prefix="selfsup-fuzz-") as tmp:
        yield Path(tmp)


def refused_or_loaded(read: Callable[[], object]) -> None:
    """``read()`` loads or raises a user error; any other exception fails the test."""
    with suppress(USER_ERRORS):
        read()
    assert not CANARY.exists(), "a fuzzed file ran code"


def mutated(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` kept whole, truncated, with a byte changed or with bytes appended."""
    how = draw(st.sampled_from(["whole", "truncate", "flip", "append"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=16))
    return data


# --- IDX (Fashion-MNIST) --------------------------------------------------------------------


@st.composite
def idx_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """(file bytes, the magic the reader expects): garbage, or a header of the right or a
    wrong magic, random dimensions (some huge) and some values."""
    magic = draw(st.sampled_from([formats.IDX_IMAGES_MAGIC, formats.IDX_LABELS_MAGIC]))
    if draw(st.booleans()):
        return draw(st.binary(max_size=64)), magic
    written = draw(st.sampled_from([magic, 0x00000803, 0x00000801, 0x00000D03, 0]))
    ndim = written & 0xFF
    size = st.integers(0, 3) | st.integers(0, 2**32 - 1)
    dims = draw(st.lists(size, min_size=ndim, max_size=ndim))
    body = draw(st.binary(max_size=48))
    return mutated(struct.pack(f">I{ndim}I", written, *dims) + body, draw), magic


@FUZZ
@given(idx_files(), st.sampled_from(["raw", "gzipped", "named .gz"]))
@example((struct.pack(">4I", 0x803, 0, 3037971479, 3037004369), 0x803), "raw")  # numpy's error
def test_fuzzed_idx_files(file: tuple[bytes, int], packing: str) -> None:
    data, magic = file
    with folder() as tmp:
        path = tmp / ("x-idx-ubyte" if packing == "raw" else "x-idx-ubyte.gz")
        path.write_bytes(gzip.compress(data) if packing == "gzipped" else data)
        refused_or_loaded(lambda: formats.read_idx(path, magic))


# --- CIFAR batch and meta files (pickles) ----------------------------------------------------

HOSTILE = [
    ("os", "mkdir"),
    ("posix", "mkdir"),
    ("builtins", "exec"),
    ("builtins", "eval"),
    ("subprocess", "check_call"),
    ("numpy", "load"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
]
"""Globals a crafted pickle may name: the first five would leave :data:`CANARY` when called."""


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def call_pickle(module: str, name: str) -> bytes:
    """A protocol-2 pickle of ``{b"data": module.name(arg)}``: the call runs when unpickled."""
    code = f"__import__('os').mkdir({str(CANARY)!r})"
    arg = {"exec": code, "eval": code}.get(name, str(CANARY))
    args = _unicode(arg) + b"\x85"  # TUPLE1
    if module == "subprocess":
        args = b"]" + _unicode("mkdir") + _unicode(str(CANARY)) + b"e\x85"  # a list, APPENDS
    call = b"c" + f"{module}\n{name}\n".encode() + args + b"R"  # GLOBAL ... REDUCE
    return b"\x80\x02}C\x04data" + call + b"s."  # EMPTY_DICT, key, value, SETITEM, STOP


arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.int8]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
)
labels = st.lists(st.integers(-3, 12) | st.integers() | st.text(max_size=3), max_size=5)
values = st.one_of(arrays, labels, st.binary(max_size=8), st.none(), st.integers())


@st.composite
def cifar_files(draw: st.DrawFn) -> bytes:
    """Garbage, a pickle that calls a global, or a (mutated) pickle of a dict with CIFAR's keys
    (bytes or str) holding arrays, lists, bytes or nothing."""
    kind = draw(st.sampled_from(["garbage", "pickle header", "call", "dict"]))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "pickle header":
        return b"\x80\x02" + draw(st.binary(max_size=64))
    if kind == "call":
        return call_pickle(*draw(st.sampled_from(HOSTILE)))
    keys = st.sampled_from([b"data", b"labels", b"label_names", "data", "labels", b"x"])
    obj = draw(st.dictionaries(keys, values, max_size=4))
    protocol = draw(st.integers(2, pickle.HIGHEST_PROTOCOL))
    return mutated(pickle.dumps(obj, protocol=protocol), draw)


@FUZZ
@given(cifar_files())
def test_fuzzed_cifar_files(data: bytes) -> None:
    with folder() as tmp:
        path = tmp / "data_batch_1"
        path.write_bytes(data)
        refused_or_loaded(lambda: formats.read_cifar_batch(path, "labels"))
        refused_or_loaded(lambda: formats.read_cifar_names(path, "label_names"))


# --- STL-10 binaries -------------------------------------------------------------------------


@st.composite
def stl_folders(draw: st.DrawFn) -> dict[str, bytes]:
    """``train_X.bin`` of about 0-2 images (a few bytes more or less), ``train_y.bin`` of a
    few labels, and maybe a ``class_names.txt`` of any bytes."""
    image = formats._STL_IMAGE_BYTES
    n, off = draw(st.integers(0, 2)), draw(st.sampled_from([0, 0, 0, -1, 1, 7]))
    pattern = draw(st.binary(min_size=1, max_size=16))
    files = {
        "train_X.bin": (pattern * (image * 2 // len(pattern) + 1))[: max(0, n * image + off)],
        "train_y.bin": draw(st.binary(max_size=4)),
    }
    if draw(st.booleans()):
        names = "\n".join(f"c{i}" for i in range(10)).encode()
        files["class_names.txt"] = draw(st.just(names) | st.binary(max_size=32))
    return files


@FUZZ
@given(stl_folders())
def test_fuzzed_stl10_files(files: dict[str, bytes]) -> None:
    with folder() as tmp:
        (tmp / "stl10_binary").mkdir()
        for name, data in files.items():
            (tmp / "stl10_binary" / name).write_bytes(data)
        refused_or_loaded(lambda: sources.load_dataset("stl10", "train", root=tmp))


# --- image folders ---------------------------------------------------------------------------

SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF", b"II*\x00"]
"""Starts of PNG, JPEG, GIF, BMP, WebP and TIFF files: the fuzzer gets into each decoder."""


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    return draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=96))


@FUZZ
@given(image_bytes(), st.sampled_from([".png", ".jpg", ".gif"]), st.sampled_from(["skip", "fail"]))
def test_fuzzed_image_files(data: bytes, suffix: str, on_bad_image: str) -> None:
    """A class folder with one file of fuzzed bytes (and, with ``skip``, one good image)."""
    from PIL import Image

    with folder() as tmp:
        (tmp / "pets" / "cat").mkdir(parents=True)
        (tmp / "pets" / "cat" / f"fuzzed{suffix}").write_bytes(data)
        if on_bad_image == "skip":
            Image.new("RGB", (9, 7), (200, 10, 10)).save(tmp / "pets" / "cat" / "good.png")
        name = f"imagefolder:{tmp / 'pets'}"
        kw = {"root": tmp, "image_size": 8, "on_bad_image": on_bad_image}
        refused_or_loaded(lambda: sources.load_dataset(name, **kw))


# --- weight files (safetensors, torch) -------------------------------------------------------

SMALL = ["backbone.name=small_resnet", "backbone.depths=[1,1]", "backbone.widths=[8,16]"]
SAFE_DTYPES = {
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F64": 8,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "I32": 4,
    "I64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "C64": 8,
    "Q4": 1,
}


def small_backbone() -> Any:
    return build_backbone(load_config(None, SMALL).backbone, in_channels=3, image_size=8)


TARGET = {
    k: (list(v.shape), "I64" if k.endswith("tracked") else "F32")
    for k, v in small_backbone().state_dict().items()
}


@st.composite
def safetensors_files(draw: st.DrawFn) -> bytes:
    """The small backbone's tensors with a few dtypes, shapes or keys changed, encoded as
    safetensors (8-byte header length, JSON header, data); sometimes with an offset off by
    one or the bytes mutated afterwards."""
    entries = dict(TARGET)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(TARGET)) | st.text(max_size=8))
        shape = draw(st.just(entries.get(key, [1])[0]) | st.lists(st.integers(0, 9), max_size=4))
        entries[key] = (shape, draw(st.sampled_from(sorted(SAFE_DTYPES))))
    slip = draw(st.sampled_from([0] * 8 + [1, -1]))  # one offset off by one
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i, (key, (shape, dtype)) in enumerate(entries.items()):
        end = offset + int(np.prod(shape)) * SAFE_DTYPES[dtype] + (slip if i == 3 else 0)
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header).encode()
    pattern = draw(st.binary(min_size=1, max_size=8))
    data = struct.pack("<Q", len(text)) + text + (pattern * (offset // len(pattern) + 1))[:offset]
    return mutated(data, draw) if draw(st.integers(0, 4)) == 0 else data


@FUZZ
@given(safetensors_files() | st.binary(max_size=64), st.sampled_from([".safetensors", ".pth"]))
def test_fuzzed_weight_files(data: bytes, suffix: str) -> None:
    backbone = small_backbone()
    with folder() as tmp:
        path = tmp / f"weights{suffix}"
        path.write_bytes(data)
        refused_or_loaded(lambda: load_backbone_weights(backbone, path, quiet=True))


# --- study files and config files (YAML) -----------------------------------------------------

HOSTILE_YAML = [
    f"!!python/object/apply:os.mkdir [{str(CANARY)!r}]",
    f"study: !!python/object/apply:os.mkdir [{str(CANARY)!r}]",
    "runs: &a [*a]",
    "a: &x 1\nb: *y\n",
    "2001-02-30",
    "[" * 300,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["configs/tiny.yaml", "knn", "quick", "full", "eval.knn.k=[3]", "../x"])
)


def yaml_documents(keys: list[str]) -> st.SearchStrategy[bytes]:
    """YAML of nested mappings and lists whose keys are mostly ``keys``; any bytes; or YAML
    that would run code or cannot be built."""
    key = st.sampled_from(keys) | st.text(max_size=4) | st.integers(0, 2)
    data = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key, inner, max_size=4),
        max_leaves=16,
    )
    top = st.dictionaries(key, data, max_size=6) | data
    return st.one_of(
        top.map(lambda d: yaml.safe_dump(d).encode()),
        st.binary(max_size=64),
        st.sampled_from(HOSTILE_YAML).map(str.encode),
    )


STUDY_KEYS = sorted(
    {
        *spec.TOP_KEYS,
        *spec.RUN_KEYS,
        *spec.EVAL_KEYS,
        *spec.SCALE_KEYS,
        *spec.PARAM_KEYS,
        *spec.REFERENCE_KEYS,
        *spec.FIGURE_KEYS,
        *spec.SCALES,
        "probe",
        "vicreg",
    }
)


@FUZZ
@given(yaml_documents(STUDY_KEYS))
@example(b"\x80")  # the inputs that broke the reader (tracebacks before issue #22's fixes)
@example(b"0000-00-00")
@example(b"study: s\nruns: [{name: a, config: 7}]\nscales: {quick: {}, full: {}}\n")
@example(b"study: s\nparams: [a]\nruns: [{name: a, command: faces}]\nscales: {}\n")
def test_fuzzed_study_files(data: bytes) -> None:
    with folder() as tmp:
        (tmp / "configs").mkdir()
        (tmp / "configs" / "tiny.yaml").write_text("train: {epochs: 1}\n")
        (tmp / "study.yaml").write_bytes(data)
        refused_or_loaded(lambda: load_study(tmp / "study.yaml", root=tmp))


DEFAULTS = config_to_dict(load_config())
CONFIG_KEYS = sorted({*DEFAULTS, *(k for v in DEFAULTS.values() if isinstance(v, dict) for k in v)})


@st.composite
def configs_of_known_keys(draw: st.DrawFn) -> bytes:
    """YAML of the config's own sections and keys with generated values (of any type, some
    in range, some not), so that the checks past the key names are reached."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(DEFAULTS)), max_size=4)):
        default = DEFAULTS[section]
        if not isinstance(default, dict):
            doc[section] = draw(scalars)
            continue
        keys = st.sampled_from(sorted(default))
        doc[section] = draw(st.dictionaries(keys, scalars | st.lists(scalars, max_size=3)))
    return yaml.safe_dump(doc).encode()


@FUZZ
@given(yaml_documents(CONFIG_KEYS) | configs_of_known_keys())
@example(b"- a\n- b\n")  # the inputs that broke the reader (tracebacks before issue #22's fixes)
@example(b"\xff")
@example(b"seed: 2001-02-30\n")
@example(b"1: x\n")
@example(b"method: {name: [vicreg]}\n")
@example(b"data: {image_size: 100000}\n")
def test_fuzzed_config_files(data: bytes) -> None:
    with folder() as tmp:
        (tmp / "config.yaml").write_bytes(data)
        refused_or_loaded(lambda: load_config(tmp / "config.yaml", TINY[:1]))


# --- the canary ------------------------------------------------------------------------------


def test_the_canary_catches_a_pickle_or_yaml_that_runs_code(tmp_path: Path) -> None:
    """The fuzzers' hostile inputs do run code when loaded unsafely (the mark appears), and the
    readers refuse them before anything runs."""
    for load in (
        lambda: pickle.loads(call_pickle("os", "mkdir")),
        lambda: yaml.unsafe_load(HOSTILE_YAML[0]),
    ):
        load()
        assert CANARY.is_dir()
        CANARY.rmdir()
    (tmp_path / "data_batch_1").write_bytes(call_pickle("os", "mkdir"))
    with pytest.raises(DataError, match=r"names os\.mkdir, which a CIFAR file never holds"):
        formats.read_cifar_batch(tmp_path / "data_batch_1", "labels")
    (tmp_path / "c.yaml").write_text(HOSTILE_YAML[1])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")
    assert not CANARY.exists()
