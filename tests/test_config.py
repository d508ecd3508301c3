"""Config loading: every shipped YAML validates; bad keys, types, ranges and unset values fail naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from musicrec.config import Config, ConfigError, load_config
from musicrec.config.loader import MISSING, parse_override

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL_YAML = sorted(CONF.rglob("*.yaml"))


def _unset_keys(path: Path) -> list[str]:
    """Keys a file (or its includes) leaves as ??? for the user to supply."""
    found = []

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif v == MISSING:
                found.append(f"{prefix}{k}")

    data = yaml.safe_load(path.read_text()) or {}
    for inc in [data.pop("include")] if isinstance(data.get("include"), str) else data.pop("include", []):
        found += _unset_keys(path.parent / inc)
    walk(data)
    return found


def test_conf_folder_has_the_profiles_and_presets():
    names = {p.relative_to(CONF).as_posix() for p in ALL_YAML}
    assert {"local.yaml", "cluster.yaml", "models/gsasrec.yaml", "experiments/demo.yaml"} <= names


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_shipped_yaml_validates(path):
    unset = _unset_keys(path)
    if unset:
        with pytest.raises(ConfigError) as err:
            load_config([path])
        for key in unset:
            assert key in str(err.value)
        config = load_config([path], [f"{key}=/somewhere" for key in unset])
    else:
        config = load_config([path])
    assert isinstance(config, Config)


def test_gsasrec_preset_has_paper_000_table_2_values():
    model = load_config([CONF / "models" / "gsasrec.yaml"]).model
    assert (model.embedding_dim, model.num_blocks, model.num_heads, model.negatives) == (128, 2, 1, 25)
    assert (model.gbce_alpha, model.gbce_t, model.learning_rate) == (0.17113, 0.55591, 0.0031805)
    sasrec = load_config([CONF / "models" / "sasrec.yaml"]).model
    assert sasrec.family == "sasrec" and sasrec.embedding_dim == 128  # the same backbone settings


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("preprocess:\n  min_userz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config([f])
    assert "preprocess.min_userz: unknown key" in str(err.value)
    assert str(f) in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("holdout:\n  gt_size: ten\n")
    with pytest.raises(ConfigError) as err:
        load_config([f])
    assert "holdout.gt_size" in str(err.value) and str(f) in str(err.value)


def test_strict_types_reject_quoted_numbers(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("seed: '7'\n")
    with pytest.raises(ConfigError, match="seed"):
        load_config([f])


def test_out_of_range_values_fail():
    with pytest.raises(ConfigError, match=r"holdout\.split_ratios"):
        load_config(overrides=["holdout.split_ratios=[0.5,0.5,0.5]"])
    with pytest.raises(ConfigError, match=r"preprocess\.ks"):
        load_config(overrides=["preprocess.ks=[0,3]"])
    with pytest.raises(ConfigError, match=r"preprocess.*max_len must be >= min_len"):
        load_config(overrides=["preprocess.min_len=10", "preprocess.max_len=5"])


def test_missing_required_value_names_key_and_file():
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "cluster.yaml"])
    message = str(err.value)
    assert "lake.root" in message and "data.root" in message and "cluster.yaml" in message


def test_overrides_are_typed_and_win_over_files(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("seed: 1\npreprocess:\n  ks: [1, 2]\n")
    config = load_config([f], ["seed=9", "preprocess.ks=[5,3,1]"])
    assert config.seed == 9
    assert config.preprocess.ks == [1, 3, 5]
    assert config.preprocess.min_len == 3  # untouched default


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("model: {family: gsasrec, learning_rate: 3e-3}\n")
    assert load_config([f]).model.learning_rate == 0.003
    assert load_config([f], ["model.weight_decay=1E+2"]).model.weight_decay == 100.0
    assert parse_override("x=-5e-1") == ("x", -0.5)
    # Only numbers: a name that merely starts like one stays a string, an int stays an int.
    assert parse_override("x=1e3x") == ("x", "1e3x")
    assert parse_override("x=7") == ("x", 7)


def test_bad_override_syntax_is_named():
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(overrides=["seed"])
    with pytest.raises(ConfigError, match="override 'seed=abc'"):
        load_config(overrides=["seed=abc"])


def test_include_is_relative_and_later_files_win(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\ndataset: {name: base}\n")
    (tmp_path / "top.yaml").write_text("include: base.yaml\nseed: 2\n")
    config = load_config([tmp_path / "top.yaml"])
    assert (config.seed, config.dataset.name) == (2, "base")


def test_error_names_the_included_file_that_set_the_key(tmp_path):
    (tmp_path / "base.yaml").write_text("holdout: {gt_size: -1}\n")
    (tmp_path / "top.yaml").write_text("include: base.yaml\nseed: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config([tmp_path / "top.yaml"])
    assert "holdout.gt_size" in str(err.value) and "base.yaml" in str(err.value)
    assert "top.yaml" not in str(err.value)
