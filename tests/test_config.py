from __future__ import annotations

import pytest

from selfsup.config import Config, VICRegConfig, load_config, save_config
from selfsup.errors import ConfigError


def test_defaults_are_vicreg_official() -> None:
    cfg = load_config()
    assert isinstance(cfg.method, VICRegConfig)
    assert (cfg.method.sim_weight, cfg.method.var_weight, cfg.method.cov_weight) == (25, 25, 1)
    assert cfg.method.projector == "8192-8192-8192"


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: 64\nmethod:\n  name: vicreg\n")
    cfg = load_config(path, ["train.epochs=5", "data.limit=100", "method.sim_weight=10"])
    assert cfg.train.epochs == 5 and cfg.train.batch_size == 64
    assert cfg.data.limit == 100 and cfg.method.sim_weight == 10.0


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.epoch=5"])
    msg = str(err.value)
    assert "train.epoch" in msg and "train.epochs" in msg and "train.batch_size" in msg


def test_unknown_section_and_method_key() -> None:
    with pytest.raises(ConfigError, match=r"valid keys at the top level"):
        load_config(None, ["trian.epochs=5"])
    with pytest.raises(ConfigError, match=r"method\.sim_weight"):
        load_config(None, ["method.lambd=0.1"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=five", "integer"),
        ("train.epochs=2.5", "integer"),
        ("train.lr=fast", "number"),
        ("train.progress=3", "true or false"),
        ("eval.knn_k=[1,x]", "integer"),
    ],
)
def test_wrong_type(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(
        ConfigError, match="valid choices: barlow_twins, dino, dino_twins, isd, moco"
    ):
        load_config(None, ["method.name=nope"])


def test_int_accepted_for_float_and_none_for_optional() -> None:
    cfg = load_config(None, ["train.lr=1", "data.limit=null"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.data.limit is None


def test_save_load_round_trip(tmp_path) -> None:
    cfg = load_config(None, ["train.epochs=7", "backbone.widths=[8,16]", "data.mean=[0.5]"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert isinstance(cfg, Config)


def test_missing_and_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_every_shipped_config_is_valid() -> None:
    from pathlib import Path

    paths = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        load_config(path)  # raises on an unknown key or a wrong type
