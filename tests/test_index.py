"""`selfsup index / retrieve / embed` on a tiny run: ANNOY against exact search, queries by id
and by image file, a flat (unlabeled) image folder, features written out, a stale index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakedata import write_image_folder
from selfsup.analysis import feature_file
from selfsup.analysis.retrieval import exact_neighbours
from selfsup.checkpoint import load_checkpoint
from selfsup.cli import main
from selfsup.data.sources import load_dataset
from selfsup.features import extract_features
from selfsup.rundir import load_run
from tiny import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("index") / "run"
    quick = [
        *TINY,
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
        "eval.monitor_every=0",
        f"data.root={out.parent / 'root'}",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *quick]) == 0
    return out


def hits(text: str) -> list[tuple[str, str, float]]:
    """(id, class, cosine) of each row `selfsup retrieve` printed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "id"])
    rows = [line.split() for line in lines[start + 1 :] if line and line.split()[0].isdigit()]
    return [(r[1], r[2], float(r[3])) for r in rows]


def embedded(run: Path, tmp: Path, *extra: str) -> tuple[torch.Tensor, dict]:
    assert main(["embed", str(run), "--out", str(tmp / "feats"), *extra]) == 0
    meta = json.loads((tmp / "feats.json").read_text())
    return torch.from_numpy(np.load(tmp / "feats.npy")), meta


def test_index_and_retrieve_match_exact_search(run: Path, tmp_path: Path, capsys) -> None:
    """The k most and least similar images by ANNOY (least: the negated query) are exact
    search's, with their cosine similarities; the query itself is left out; embed writes the
    same features the index holds, with labels and ids of matching lengths."""
    assert main(["index", str(run)]) == 0
    meta = json.loads((run / "index" / "synthetic-train.json").read_text())
    assert (run / "index" / "synthetic-train.ann").stat().st_size > 0
    assert meta["n"] == len(meta["ids"]) == len(meta["labels"]) == 4096 and meta["dim"] == 16
    assert meta["ids"][:3] == [0, 1, 2] and meta["backbone"] == "student"
    feats, emb_meta = embedded(run, tmp_path)
    assert feats.shape == (4096, 16) and feats.dtype == torch.float32
    assert emb_meta["ids"] == meta["ids"] and emb_meta["labels"] == meta["labels"]
    classes = meta["classes"]
    for query in (5, 1234):
        for dissimilar in (False, True):
            capsys.readouterr()
            args = ["retrieve", str(run), "--query", str(query), "-k", "6"]
            assert main([*args, *(["--dissimilar"] if dissimilar else [])]) == 0
            got = hits(capsys.readouterr().out)
            exact = exact_neighbours(feats, feats[query : query + 1], 7, dissimilar=dissimilar)
            want = [i for i in exact[0].tolist() if i != query][:6]
            assert [int(i) for i, _, _ in got] == want, (query, dissimilar)
            assert [c for _, c, _ in got] == [classes[meta["labels"][i]] for i in want]
            cos = torch.nn.functional.cosine_similarity(feats[want], feats[query : query + 1])
            assert [s for _, _, s in got] == pytest.approx(cos.tolist(), abs=2e-4)
    png = run / "plots" / "retrieve-synthetic-train-item-1234-least.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5_000


def test_retrieve_by_image_file_embeds_it_like_the_dataset(run: Path, tmp_path: Path, capsys):
    """An image file of a training image (padded to 16 x 24 px: decoded, centre-cropped to the
    dataset's 16 px) finds that image first; a query that is neither a file nor an id is a
    clear error."""
    image = load_dataset("synthetic", "train", image_size=16).images[77].permute(1, 2, 0)
    padded = np.full((24, 16, 3), 255, np.uint8)
    padded[4:20] = image.numpy()
    Image.fromarray(padded).save(tmp_path / "query.png")
    out = tmp_path / "grid.png"
    capsys.readouterr()
    args = ["retrieve", str(run), "--query", str(tmp_path / "query.png"), "-k", "3"]
    assert main([*args, "--out", str(out)]) == 0
    got = hits(capsys.readouterr().out)
    assert got[0][0] == "77" and got[0][2] > 0.999 and len(got) == 3
    assert out.read_bytes().startswith(b"\x89PNG")
    assert main(["retrieve", str(run), "--query", "no-such-thing"]) == 2
    assert "neither an image file nor an image of synthetic train" in capsys.readouterr().err
    assert main(["retrieve", str(run), "--query", "4096"]) == 2  # one past the last index


def test_flat_image_folder_index_retrieve_and_embed(run: Path, tmp_path: Path, capsys) -> None:
    """A folder of loose images (no labels): ids are file paths, a file finds itself, an id
    query leaves itself out, and the class column says '-'."""
    folder = tmp_path / "flat"
    written = write_image_folder(folder, classes=None, per_class=7, size=(20, 24))
    dataset = f"imagefolder:{folder}"
    assert main(["index", str(run), "--dataset", dataset]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "retrieve",
                str(run),
                "--dataset",
                dataset,
                "--query",
                str(written["paths"][3]),
                "-k",
                "4",
            ]
        )
        == 0
    )
    got = hits(capsys.readouterr().out)
    assert got[0][:2] == ("img003.png", "-") and got[0][2] > 0.999
    assert {i for i, _, _ in got} <= {p.name for p in written["paths"]}
    assert main(["retrieve", str(run), "--dataset", dataset, "--query", "img003.png"]) == 0
    by_id = hits(capsys.readouterr().out)
    assert len(by_id) == 6 and "img003.png" not in [i for i, _, _ in by_id]
    feats, meta = embedded(run, tmp_path, "--dataset", dataset)
    assert meta["ids"] == [f"img{i:03d}.png" for i in range(7)]
    assert meta["labels"] == [-1] * 7 and len(feats) == 7


def test_embed_parquet_and_its_clear_error_without_pyarrow(
    run: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "feats.parquet"
    assert main(["embed", str(run), "--split", "test", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 1024 and table.column_names == ["id", "label", "class", "feature"]
    feature = np.asarray(table.column("feature").to_pylist(), dtype=np.float32)
    npy, _ = embedded(run, tmp_path, "--split", "test")
    assert feature.shape == (1024, 16) and np.allclose(feature, npy.numpy())
    assert json.loads(table.schema.metadata[b"selfsup"])["split"] == "test"
    monkeypatch.setattr(feature_file, "pyarrow_available", lambda: False)
    assert main(["embed", str(run), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "needs pyarrow: pip install pyarrow" in capsys.readouterr().err


def test_a_missing_or_stale_index_says_to_run_selfsup_index(run: Path, tmp_path: Path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["retrieve", str(copy), "--split", "test", "--query", "0"]) == 2
    assert f"selfsup index {copy} --dataset synthetic --split test" in capsys.readouterr().err
    assert main(["index", str(copy)]) == 0
    ckpt_path = copy / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, ckpt_path)  # as if the run had trained on
    capsys.readouterr()
    assert main(["retrieve", str(copy), "--query", "0"]) == 2
    err = capsys.readouterr().err
    assert "is stale" in err and f"rerun: selfsup index {copy} --dataset synthetic" in err
    assert main(["index", str(copy)]) == 0
    assert main(["retrieve", str(copy), "--query", "0"]) == 0


def test_an_image_replaced_after_indexing_is_never_answered_from_the_old_features(
    run: Path, tmp_path: Path, capsys
) -> None:
    """Issue 22.8: an image replaced by another of the same name after ``selfsup index`` was
    retrieved with the old image's features (the ids still matched). The index records each
    image's content; retrieve refuses a changed split, naming the image and the command."""
    folder = tmp_path / "flat"
    written = write_image_folder(folder, classes=None, per_class=5, size=(20, 24))
    other = write_image_folder(tmp_path / "other", classes=None, per_class=3, size=(20, 24), seed=9)
    dataset = f"imagefolder:{folder}"
    assert main(["index", str(run), "--dataset", dataset]) == 0
    shutil.copyfile(other["paths"][2], written["paths"][2])  # same name, another image
    capsys.readouterr()
    assert main(["retrieve", str(run), "--dataset", dataset, "--query", "img000.png"]) == 2
    err = capsys.readouterr().err
    assert "img002.png" in err and f"selfsup index {run} --dataset {dataset}" in err
    assert main(["index", str(run), "--dataset", dataset]) == 0
    assert main(["retrieve", str(run), "--dataset", dataset, "--query", "img000.png"]) == 0


def test_image_folder_files_follow_the_images_past_a_bad_file(tmp_path: Path) -> None:
    """The ids of an image folder are the files of the images kept, in order, also when a bad
    file is left out, and a subset keeps its images' files."""
    written = write_image_folder(tmp_path / "flat", classes=None, per_class=4, size=16)
    (tmp_path / "flat" / "img001b.png").write_bytes(b"not an image")  # sorted among the good
    data = load_dataset(f"imagefolder:{tmp_path / 'flat'}", root=tmp_path / "root", image_size=16)
    assert data.files == [p.name for p in written["paths"]]
    for image, rgb in zip(data.images, written["rgb"], strict=True):
        assert np.array_equal(image.permute(1, 2, 0).numpy(), rgb)
    assert data.subset(torch.tensor([3, 1])).files == ["img003.png", "img001.png"]
    assert data.subset(slice(1, 3)).files == ["img001.png", "img002.png"]


def test_a_dino_run_is_indexed_with_its_teacher(tmp_path: Path) -> None:
    """The evaluation backbone: DINO's EMA teacher, not the student (eval.backbone=auto)."""
    run = tmp_path / "dino"
    quick = [a for a in TINY if not a.startswith("method.projector")] + [
        "method.name=dino",
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "method.local_crops=2",
        "train.epochs=1",
        "data.limit=64",
        "eval.protocols=[knn]",
        "eval.knn.k=[5]",
        "eval.compare_random=false",
        "eval.compare_pixels=false",
        "eval.monitor_every=0",
    ]
    assert main(["pretrain", "--config", "defaults", "--out", str(run), *quick]) == 0
    assert main(["index", str(run), "--split", "test"]) == 0
    meta = json.loads((run / "index" / "synthetic-test.json").read_text())
    assert meta["backbone"] == "teacher"
    feats, _ = embedded(run, tmp_path, "--split", "test")
    cfg, method = load_run(run)
    images = load_dataset("synthetic", "test", image_size=16).images[:8]
    kw = dict(
        size=cfg.views.size, mean=cfg.data.mean, std=cfg.data.std, precision=cfg.train.precision
    )
    teacher = extract_features(method.teacher[0], images, **kw)
    student = extract_features(method.backbone, images, **kw)
    assert torch.allclose(feats[:8], teacher, atol=1e-5)
    assert not torch.allclose(feats[:8], student, atol=1e-3)
