"""Study files: a YAML list of runs and the evaluations applied to each, at two scales.

A study file (``studies/*.yaml``) names each run (the CLI command that trains it, a config of
``configs/`` and overrides), each evaluation (``selfsup eval`` protocols, datasets and
``eval.*`` overrides), per-scale overrides (``quick``: small subsets and budgets for a CPU;
``full``: the original datasets and budgets for a GPU), the published numbers it compares
against and the figures it draws. :func:`load_study` parses and validates it: an unknown key is
a :class:`ConfigError` naming the key's place and the valid keys; :mod:`selfsup.studies.plan`
turns it into cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.errors import ConfigError
from selfsup.names import check_name
from selfsup.yaml_file import read_yaml_mapping

SCALES = ("quick", "full")
COMMANDS = ("pretrain", "supervised", "joint", "faces")
OWN = "own"  # the evaluation made of the records the run's own command wrote (its head, ...)
FIGURE_KINDS = ("accuracy_vs_compute", "curves", "tsne")

TOP_KEYS = (
    "study",
    "description",
    "params",
    "runs",
    "evals",
    "scales",
    "references",
    "figures",
    "paired",
)
RUN_KEYS = ("name", "command", "config", "args", "overrides", "scales", "evals")
EVAL_KEYS = ("protocols", "datasets", "overrides", "scales")
SCALE_KEYS = ("train", "eval")
PARAM_KEYS = ("default", "help")
REFERENCE_KEYS = ("run", "eval", "dataset", "protocol", "k", "fraction", "ratio", "top1", "source")
FIGURE_KEYS = ("kind", "eval", "runs", "run", "keys", "out", "labels")


@dataclass
class Run:
    name: str
    command: str = "pretrain"
    config: str | None = None
    args: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    scales: dict[str, list[str]] = field(default_factory=dict)
    evals: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    name: str
    protocols: list[str]
    datasets: list[str] = field(default_factory=list)  # empty: the run's pretraining dataset(s)
    overrides: list[str] = field(default_factory=list)
    scales: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Study:
    name: str
    path: Path
    description: str
    params: dict[str, dict[str, Any]]
    runs: list[Run]
    evals: dict[str, Evaluation]
    scales: dict[str, dict[str, list[str]]]
    references: list[dict[str, Any]]
    figures: list[dict[str, Any]]
    paired: bool = False  # McNemar tests of every run against the first under the table


@dataclass
class Cell:
    """One unit of work: a run's training (``eval`` is None) or one evaluation of a run."""

    run: str
    eval: str | None
    command: str
    config: str | None = None
    args: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.run}/{self.eval or 'train'}"


def _keys(where: str, data: Any, valid: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(valid)}")
    for key in data:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    for key in required:
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}; valid keys: {', '.join(valid)}")
    return data


def _mapping(where: str, value: Any) -> dict:
    """``value`` (None: empty) when it is a mapping, else a ConfigError naming ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of names to settings, got {value!r:.60}")
    return value


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r:.60}")
    return value


def _strings(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise ConfigError(f"{where} must be a list of strings, got {value!r}")
    return [str(v) for v in value]


def _per_scale(where: str, value: Any) -> dict[str, list[str]]:
    data = _keys(where, value or {}, SCALES)
    return {s: _strings(f"{where}.{s}", data.get(s)) for s in SCALES}


def _run(i: int, data: Any, root: Path) -> Run:
    d = _keys(f"runs[{i}]", data, RUN_KEYS, ("name",))
    where = f"runs[{i}] ({d['name']})"
    command = d.get("command", "pretrain")
    if not isinstance(command, str) or command not in COMMANDS:
        raise ConfigError(f"{where}.command={command!r}; valid: {', '.join(COMMANDS)}")
    config = d.get("config")
    if config is not None:
        config = _string(f"{where}.config", config)
    if config is None and command != "faces":
        raise ConfigError(f"{where}: missing key 'config' (a YAML file of configs/)")
    if config is not None and not (root / config).is_file():
        raise ConfigError(f"{where}.config: {config!r} does not exist under {root}")
    return Run(
        name=check_name(f"runs[{i}].name", d["name"]),
        command=command,
        config=config,
        args=_strings(f"{where}.args", d.get("args")),
        overrides=_strings(f"{where}.overrides", d.get("overrides")),
        scales=_per_scale(f"{where}.scales", d.get("scales")),
        evals=_strings(f"{where}.evals", d.get("evals")),
    )


def _evaluation(name: str, data: Any) -> Evaluation:
    d = _keys(f"evals.{name}", data, EVAL_KEYS, ("protocols",))
    ev = Evaluation(
        name=check_name("evals", name),
        protocols=_strings(f"evals.{name}.protocols", d["protocols"]),
        datasets=_strings(f"evals.{name}.datasets", d.get("datasets")),
        overrides=_strings(f"evals.{name}.overrides", d.get("overrides")),
        scales=_per_scale(f"evals.{name}.scales", d.get("scales")),
    )
    for text in ev.overrides + [t for s in SCALES for t in ev.scales[s]]:
        if not text.startswith("eval."):
            raise ConfigError(
                f"evals.{name}: override {text!r} is not an eval.* key; a finished run's "
                "evaluation can change only eval.* settings (put it in the run's overrides)"
            )
    return ev


def _list(where: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, got {value!r:.60}")
    return value


def _references(value: Any, runs: list[str], evals: list[str]) -> list[dict[str, Any]]:
    references = [
        _keys(f"references[{i}]", r, REFERENCE_KEYS, ("run", "eval", "top1", "source"))
        for i, r in enumerate(_list("references", value))
    ]
    for i, ref in enumerate(references):
        check_choice(f"references[{i}].run", ref["run"], runs)
        check_choice(f"references[{i}].eval", ref["eval"], evals)
    return references


def _figures(value: Any, runs: list[str]) -> list[dict[str, Any]]:
    figures = [
        _keys(f"figures[{i}]", f, FIGURE_KEYS, ("kind",))
        for i, f in enumerate(_list("figures", value))
    ]
    for i, fig in enumerate(figures):
        check_choice(f"figures[{i}].kind", fig["kind"], list(FIGURE_KINDS))
        shown = fig.get("runs") or ([fig["run"]] if "run" in fig else [])
        for run in _strings(f"figures[{i}].runs", shown if isinstance(shown, list) else [shown]):
            # RUN, or RUN/GLOB: a folder inside the run (a trained evaluation's curves)
            check_choice(f"figures[{i}].runs", run.split("/", 1)[0], runs)
    return figures


def check_choice(where: str, value: Any, valid: list[str]) -> None:
    if value not in valid:
        raise ConfigError(f"{where}={value!r}; valid: {', '.join(map(str, valid))}")


def load_study(path: str | Path, root: str | Path = ".") -> Study:
    """Parse and validate a study file; config paths are relative to ``root`` (the repo)."""
    path, root = Path(path), Path(root)
    data = read_yaml_mapping(path, "study file", "studies/")
    d = _keys(str(path), data, TOP_KEYS, ("study", "runs", "scales"))
    params = {}
    for name, spec in _mapping("params", d.get("params")).items():
        params[str(name)] = _keys(f"params.{name}", spec or {}, PARAM_KEYS)
    if not isinstance(d["runs"], list) or not d["runs"]:
        raise ConfigError("runs must be a non-empty list of runs")
    runs = [_run(i, r, root) for i, r in enumerate(d["runs"])]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"runs: names must be unique, got {', '.join(names)}")
    evals = {str(n): _evaluation(str(n), e) for n, e in _mapping("evals", d.get("evals")).items()}
    if OWN in evals:
        raise ConfigError(f"evals: {OWN!r} is built in (the run's own records); rename it")
    for run in runs:
        for name in run.evals:
            check_choice(f"runs ({run.name}).evals", name, [OWN, *evals])
    scales = _keys("scales", d["scales"], SCALES, SCALES)
    scales = {s: _keys(f"scales.{s}", scales[s] or {}, SCALE_KEYS) for s in SCALES}
    scales = {
        s: {k: _strings(f"scales.{s}.{k}", v.get(k)) for k in SCALE_KEYS} for s, v in scales.items()
    }
    references = _references(d.get("references"), names, [OWN, *evals])
    figures = _figures(d.get("figures"), names)
    if not isinstance(d.get("paired", False), bool):
        raise ConfigError(f"paired={d['paired']!r} must be true or false")
    return Study(
        str(d["study"]),
        path,
        str(d.get("description") or ""),
        params,
        runs,
        evals,
        scales,
        references,
        figures,
        d.get("paired", False),
    )
