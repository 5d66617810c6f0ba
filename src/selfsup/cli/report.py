"""``selfsup report RUN_DIR``: the run's self-contained HTML report, optionally opened in
headless Chromium to check that it renders and to save a screenshot."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfsup.analysis.browser import CHROMIUM_ENV


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "report",
        help="write RUN_DIR/report.html: results against the baselines, retrieval, collapse "
        "monitors, every plot and the config in one self-contained page",
        description="Write RUN_DIR/report.html (images embedded, no external files). Run "
        "`selfsup viz tsne` / `selfsup viz retrieval` first to include their figures.",
    )
    rp.add_argument("run_dir", type=Path)
    rp.add_argument("--out", type=Path, help="HTML file (default: RUN_DIR/report.html)")
    rp.add_argument(
        "--check",
        action="store_true",
        help="open the page in headless Chromium and fail on console errors or undecoded "
        f"images (needs playwright and chromium; {CHROMIUM_ENV} names the executable)",
    )
    rp.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="save a full-page screenshot (1000 px wide) there; implies --check",
    )
    rp.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selfsup.analysis.browser import check_page
    from selfsup.analysis.report import write_report
    from selfsup.run.lock import run_lock, writes_into

    inside = args.out is None or writes_into(args.run_dir, args.out)
    with run_lock(args.run_dir, enabled=inside):
        path = write_report(args.run_dir, args.out)
    print(f"report: {path}")
    if not (args.check or args.screenshot):
        return 0
    check = check_page(path, screenshot=args.screenshot)
    print(f"browser check: {check.images} images decoded" if check.ok else "browser check failed:")
    for line in check.problems():
        print(f"  {line}")
    if check.screenshot is not None:
        print(f"screenshot: {check.screenshot}")
    return 0 if check.ok else 1
