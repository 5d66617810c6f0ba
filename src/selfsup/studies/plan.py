"""A study's plan: ``--param`` values and ``--map`` substitutions applied, the study turned
into the ordered cells the runner executes (each run's training, then its evaluations)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from selfsup.config import DataConfig, apply_overrides
from selfsup.data.sources import DATASET_SPLITS, dataset_names
from selfsup.errors import ConfigError
from selfsup.studies.spec import OWN, SCALES, Cell, Run, Study, check_choice

_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RUN_REF = re.compile(r"\$\{run:([A-Za-z0-9_.-]+)\}")


def parse_pairs(texts: list[str], what: str) -> dict[str, str]:
    """``["a=b", ...]`` -> {"a": "b"}; ``what`` names the option for the error."""
    out = {}
    for text in texts:
        if "=" not in text or not text.split("=", 1)[0]:
            raise ConfigError(f"{what} {text!r} must look like NAME=VALUE")
        key, value = text.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def resolve_params(study: Study, given: dict[str, str]) -> dict[str, str]:
    """The study's parameters: ``--param`` values over its defaults; unknown or missing ones
    are errors naming the declared parameters."""
    for name in given:
        if name not in study.params:
            valid = ", ".join(study.params) or "none"
            raise ConfigError(
                f"--param {name}: {study.name} declares no such parameter; valid: {valid}"
            )
    out = {}
    for name, spec in study.params.items():
        value = given.get(name, spec.get("default"))
        if value is None:
            raise ConfigError(f"{study.name} needs --param {name}=VALUE ({spec.get('help', '')})")
        out[name] = str(value)
    return out


def substitute(text: str, params: dict[str, str], runs_dir: Path) -> str:
    """``${NAME}`` -> the parameter's value, ``${run:NAME}`` -> that run's directory."""
    text = _RUN_REF.sub(lambda m: str(runs_dir / m.group(1)), text)
    return _PARAM.sub(lambda m: params[m.group(1)] if m.group(1) in params else m.group(0), text)


def _run_dataset(run: Run, overrides: list[str], root: Path) -> tuple[str | None, str]:
    data: dict[str, Any] = {}
    if run.config is not None:
        data = yaml.safe_load((root / run.config).read_text()) or {}
    section = apply_overrides(data, overrides).get("data") or {}
    default = None if run.command == "faces" else DataConfig.dataset  # faces: no config
    return section.get("dataset", default), section.get("split", DataConfig.split)


def check_map(study: Study, mapping: dict[str, str], used: set[str]) -> None:
    valid = [n for n in dataset_names() if n != "imagefolder:PATH"]
    for old, new in mapping.items():
        if old not in valid:
            raise ConfigError(
                f"--map {old}={new}: unknown dataset {old!r}; valid: {', '.join(valid)}"
            )
        if new not in valid and not new.startswith("imagefolder:"):
            raise ConfigError(
                f"--map {old}={new}: unknown dataset {new!r}; valid: {', '.join(valid)}, "
                "imagefolder:PATH"
            )
        if old not in used:
            raise ConfigError(
                f"--map {old}={new}: {study.name} does not use {old}; it uses "
                + ", ".join(sorted(used))
            )


def plan(
    study: Study,
    scale: str,
    mapping: dict[str, str],
    params: dict[str, str],
    runs_dir: Path,
    root: Path = Path("."),
) -> list[Cell]:
    """The study's cells in order: each run's training, then its evaluations. Overrides apply
    in this order, the later winning: the run's (or evaluation's) own, the scale's for every
    run (``scales.quick.train``: the budget), the run's (evaluation's) for this scale."""
    check_choice("--scale", scale, list(SCALES))
    sub = lambda texts: [substitute(t, params, runs_dir) for t in texts]  # noqa: E731
    cells, used = [], set()
    for run in study.runs:
        overrides = sub([*run.overrides, *study.scales[scale]["train"], *run.scales[scale]])
        dataset, split = _run_dataset(run, overrides, root)
        if dataset is not None:
            used.add(dataset)
            if dataset in mapping:
                new = mapping[dataset]
                overrides.append(f"data.dataset={new}")
                if split not in DATASET_SPLITS.get(new, DATASET_SPLITS["imagefolder:PATH"]):
                    overrides.append("data.split=train")
        cells.append(Cell(run.name, None, run.command, run.config, sub(run.args), overrides))
        for name in run.evals:
            if name == OWN:
                cells.append(Cell(run.name, OWN, "own"))
                continue
            ev = study.evals[name]
            used.update(ev.datasets)
            cells.append(
                Cell(
                    run.name,
                    name,
                    "eval",
                    overrides=sub([*ev.overrides, *study.scales[scale]["eval"], *ev.scales[scale]]),
                    protocols=list(ev.protocols),
                    datasets=[mapping.get(d, d) for d in ev.datasets],
                )
            )
    check_map(study, mapping, used)
    return cells
