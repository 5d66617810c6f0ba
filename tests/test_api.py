"""The README's notebook block (selfsup.api), run as written on a small run: a library user's
way in without the CLI (issue #25)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from selfsup.api import Run
from selfsup.cli import main
from selfsup.errors import SelfsupError
from tiny import TINY

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    quick = ["train.epochs=1", "eval.protocols=[knn]", "eval.knn.k=[20]"]
    quick += ["eval.compare_random=false", "eval.compare_pixels=false"]
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *TINY, *quick]) == 0
    return out


def notebook_block() -> str:
    text = README.read_text()
    section = text.split("### In a notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_notebook_block_runs_as_written(run_dir, capsys) -> None:
    code = notebook_block()
    assert 'Run("runs/vicreg-fm")' in code and 'load_images("fashion-mnist", "test")' in code
    code = code.replace("runs/vicreg-fm", str(run_dir))
    code = code.replace('load_images("fashion-mnist", "test")', 'load_images("synthetic", "test")')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the user's own snippet, not a file's data
    assert scope["feats"].shape == (1000, scope["run"].backbone.num_features)
    inits = [r["init"] for r in scope["records"]]
    assert inits == ["pretrained", "pixels"]
    n = min(2000, len(scope["test"]))  # test_limit=2000 of the synthetic split's images
    assert all(r["n_test"] == n and r["k"] == 20 for r in scope["records"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("pretrained ") and printed[0].endswith(f" {n}")


def test_embed_matches_the_runs_evaluation_features_and_writes_nothing(run_dir) -> None:
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    run = Run(run_dir)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a, b = run.embed(images), run.embed(images, batch_size=3)
    assert torch.allclose(a, b, atol=1e-5) and a.dtype == torch.float32
    run.score("knn", k=[3], test_limit=32)
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(SelfsupError, match="uint8 images"):
        run.embed(images.float())
