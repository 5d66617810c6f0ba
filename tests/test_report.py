"""`selfsup report`: the self-contained HTML page of a run, checked in headless Chromium.

The browser tests need playwright and Chromium (`make setup` installs both where apt and root
are available). Without Chromium they FAIL, naming the fix; set SELFSUP_NO_BROWSER=1 to skip
them knowingly on a machine that cannot have a browser.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.analysis.browser import check_page, chromium_path, save_screenshot
from selfsup.analysis.report import discover_figures, results_section, write_report
from selfsup.cli import main
from selfsup.errors import SelfsupError
from tiny import TINY

RUN = [
    *TINY,
    "eval.protocols=[knn]",
    "eval.knn.k=[5]",
    "eval.monitor_every=1",
    "viz.embed_epochs=[1,2]",
    "viz.embed_limit=60",
]
IMG_SRC = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny finished run (kNN with both baselines, monitors each epoch, embeddings after
    epochs 1 and 2) with its t-SNE and retrieval figures, and one figure no caption table
    knows, whose name needs escaping."""
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["pretrain", "--config", "defaults", "--out", str(out), *RUN]) == 0
    assert main(["viz", "tsne", str(out)]) == 0
    assert main(["viz", "retrieval", str(out), "-k", "4", "--queries", "3"]) == 0
    shutil.copy(out / "plots" / "tsne.png", out / "plots" / "zz<new>&.png")
    return out


def require_browser() -> None:
    """Fail (not skip) with the fix when playwright or Chromium is missing, unless
    SELFSUP_NO_BROWSER=1."""
    if os.environ.get("SELFSUP_NO_BROWSER") == "1":
        pytest.skip("SELFSUP_NO_BROWSER=1: browser checks skipped on request")
    if importlib.util.find_spec("playwright") is None:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (or make setup)")
    try:
        chromium_path()
    except SelfsupError as err:
        pytest.fail(f"{err} (or set SELFSUP_NO_BROWSER=1 to skip the browser tests)")


def test_report_holds_every_section_table_and_figure(run_dir: Path, capsys) -> None:
    assert main(["report", str(run_dir)]) == 0
    text = (run_dir / "report.html").read_text()
    assert text.index('id="index"') < text.index('id="run"')
    for section in ("run", "results", "retrieval", "collapse-monitors", "figures", "config"):
        assert f'<h2 id="{section}">' in text and f'href="#{section}"' in text
    # the kNN table: pretrained next to both baselines, numbers from results.json
    results = json.loads((run_dir / "results.json").read_text())
    top1 = {r["init"]: r["top1"] for r in results["evals"]}
    assert set(top1) == {"pretrained", "random", "pixels"}
    for name in ("pretrained top-1", "random init top-1", "raw pixels top-1"):
        assert f"<th>{name}</th>" in text
    for value in top1.values():
        assert f"{100 * value:.1f}%" in text
    # issue #25.10: each figure with its interval and n, and the run's budget and cost
    (mine,) = [r for r in results["evals"] if r["init"] == "pretrained"]
    lo, hi = mine["top1_ci95"]
    assert f"95% CI {100 * lo:.1f}-{100 * hi:.1f}" in text
    assert f"<td>{mine['n_test']:,}</td>" in text
    compute = results["compute"]
    assert f"{compute['steps']:,} steps" in text and "images/s" in text
    assert f"{compute['params']['total']:,} in all" in text and "MFLOPs" in text
    # retrieval: precision@k of the three features and ANNOY's recall, from retrieval.json
    saved = json.loads((run_dir / "plots" / "retrieval.json").read_text())
    assert saved["k"] == 4 and set(saved["precision"]) == {
        "pretrained",
        "random init",
        "raw pixels",
    }
    assert f"<td>ANNOY (pretrained features)</td><td>{100 * saved['recall']:.1f}%</td>" in text
    for name, p in saved["precision"].items():
        assert f"<td>{name}</td><td>{100 * p:.1f}%</td>" in text
    # one monitor row per epoch
    assert re.search(r"<tr><td>1</td><td>[0-9.]+</td>", text)
    assert re.search(r"<tr><td>2</td><td>[0-9.]+</td>", text)
    # every PNG embedded, known ones first; the unknown one captioned by its escaped name
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    embedded = IMG_SRC.findall(text)
    names = [html.unescape(alt) for _, alt in embedded]
    assert sorted(names) == pngs
    assert names[:3] == ["curves.png", "tsne.png", "retrieval.png"]
    assert names[-1] == "zz<new>&.png"
    assert "zz&lt;new&gt;&amp;.png" in text and "zz<new>" not in text
    assert sum(n.startswith("confusion-") for n in names) == 3
    for data, alt in embedded:
        assert base64.b64decode(data) == (run_dir / "plots" / html.unescape(alt)).read_bytes()
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:|#)', text)
    assert "<script" not in text and "<link" not in text
    assert f"<pre>{html.escape((run_dir / 'config.yaml').read_text())}</pre>" in text


def test_a_run_not_yet_evaluated_gets_a_report_that_says_what_is_missing(
    run_dir: Path, tmp_path: Path
) -> None:
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    text = (write_report(tmp_path)).read_text()
    assert "No results.json: the run has not been evaluated yet." in text
    assert "run <code>selfsup viz retrieval</code>" in text
    assert "train with eval.monitor_every=1" in text
    assert "No figures under plots/." in text and "<img" not in text
    (tmp_path / "results.json").write_text(json.dumps({"verification": {"acc": 0.75}}))
    text = (write_report(tmp_path)).read_text()  # results without evaluation records: shown
    assert "results.json (no evaluation records):" in text and "&quot;acc&quot;: 0.75" in text


def test_known_figures_come_first_and_unknown_ones_by_name(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    (plots / "faces").mkdir(parents=True)
    names = (
        "b.png",
        "confusion-x.png",
        "corr.png",
        "a.png",
        "curves.png",
        "faces/g.png",
        "faces-pretrained.png",
        "train_val.png",
        "notes.txt",
    )
    for name in names:
        (plots / name).write_bytes(b"")
    got = [(p.relative_to(plots).as_posix(), c) for p, c in discover_figures(plots)]
    assert [n for n, _ in got] == [
        "curves.png",
        "train_val.png",
        "corr.png",
        "faces-pretrained.png",
        "confusion-x.png",
        "a.png",
        "b.png",
        "faces/g.png",
    ]
    assert got[5] == ("a.png", "a.png")
    assert got[4][1] == "Confusion matrix: confusion-x.png"
    assert got[3][1].endswith(": faces-pretrained.png")


def test_report_of_a_folder_without_a_run_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run (no config.yaml)" in capsys.readouterr().err


def test_report_renders_in_chromium_and_a_corrupt_image_is_caught(run_dir: Path, capsys) -> None:
    require_browser()
    shot = run_dir / "shot.png"
    assert main(["report", str(run_dir), "--screenshot", str(shot)]) == 0
    assert "browser check: 7 images decoded" in capsys.readouterr().out
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 1_000_000
    # the same page with one image's base64 payload damaged and a script that logs an error and
    # throws: the check must report all three
    text = (run_dir / "report.html").read_text()
    data, alt = IMG_SRC.findall(text)[1]
    broken = run_dir / "broken.html"
    script = '<script>console.error("boom"); throw new Error("bang");</script></body>'
    broken.write_text(text.replace(data, "AAAA" + data[40:], 1).replace("</body>", script))
    check = check_page(broken)
    assert not check.ok and check.images == 7
    assert check.broken_images == [html.unescape(alt)]
    assert check.console_errors == ["boom"] and "bang" in check.page_errors[0]


def test_a_screenshot_over_the_limit_is_stored_with_a_palette(tmp_path: Path) -> None:
    gradient = np.linspace(0, 255, 300 * 200 * 3).reshape(300, 200, 3).astype(np.uint8)
    noisy = gradient ^ np.random.default_rng(0).integers(0, 4, gradient.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG")
    raw = buf.getvalue()
    small = save_screenshot(raw, tmp_path / "a.png", max_bytes=len(raw) - 1)
    with Image.open(small) as image:
        assert image.mode == "P" and image.size == (200, 300)
        back = np.asarray(image.convert("RGB")).astype(int)
    assert small.stat().st_size < len(raw)
    assert np.abs(back - noisy).mean() < 8  # the same picture, in 256 colours
    kept = save_screenshot(raw, tmp_path / "b.png", max_bytes=len(raw))
    assert kept.read_bytes() == raw


def test_results_tables_show_seed_spread_and_the_margin_over_the_best_baseline() -> None:
    def rec(protocol: str, init: str, seed: int, top1: float, **kw) -> dict:
        return {
            "protocol": protocol,
            "dataset": "ds<1>",
            "init": init,
            "seed": seed,
            "top1": top1,
            "f1_macro": top1 - 0.01,
            **kw,
        }

    evals = [
        rec("finetune", "pretrained", 0, 0.60, fraction=0.01),
        rec("finetune", "pretrained", 1, 0.62, fraction=0.01),
        rec("finetune", "random", 0, 0.40, fraction=0.01),
        rec("finetune", "random", 1, 0.44, fraction=0.01),
        rec("knn", "pretrained", 0, 0.70, k=20),
        rec("knn", "pixels", 0, 0.75, k=20),
        rec("pseudo-label", "pretrained", 0, 0.66, fraction=0.1, ratio=0.4),
    ]
    text = results_section({"evals": evals})
    assert [m for m in re.findall(r"<h3>([^<]+)</h3>", text)] == [
        "kNN",
        "Fine-tuning",
        "Semi-supervised (pseudo-labels)",
    ]
    assert "<td>finetune 1% on ds&lt;1&gt;</td><td>2</td><td>-</td><td>61.0 ± 1.4% " in text
    assert "<td>42.0 ± 2.8% " in text  # the random-init twin of the same fine-tuning
    assert '<span class="better">+19.0</span>' in text  # 61.0 - 42.0
    assert '<span class="worse">-5.0</span>' in text  # kNN: raw pixels are ahead
    assert "does NOT beat raw pixels" in text
    assert "pretrained − best baseline" not in text.split("Semi-supervised")[1]  # no baseline
