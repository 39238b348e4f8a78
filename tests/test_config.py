"""Config: unknown keys and wrong types are ConfigErrors naming the key; overrides resolve."""

from __future__ import annotations

import pytest

from polyrec.config import load_config, parse_value, to_toml
from polyrec.errors import ConfigError


def test_defaults_train_lightgcn_on_embedded_data():
    cfg = load_config()
    assert cfg.model == "lightgcn"
    assert cfg.data.path == "embedded:retailrocket"
    assert cfg.data.protocol == "leave-one-out"
    assert cfg.params.dim == 64


def test_bare_and_dotted_overrides():
    cfg = load_config(None, ["lr=0.01", "train.epochs=3", "eval.ks=[5, 10]", "dim=32"], model="mf")
    assert cfg.train.lr == 0.01
    assert cfg.train.epochs == 3
    assert cfg.eval.ks == [5, 10]
    assert cfg.params.dim == 32


def test_unknown_key_names_it():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        load_config(None, ["learning_rate=0.1"])


def test_unknown_dotted_key_names_it():
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        load_config(None, ["train.lrr=0.1"])


def test_unknown_model_param():
    with pytest.raises(ConfigError, match=r"params\.nope"):
        load_config(None, ["params.nope=1"], model="mf")


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config(None, ["train.epochs=many"])


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model 'nosuch'"):
        load_config(None, [], model="nosuch")


def test_missing_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("model = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_toml_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=0.005", "data.target=buy"], model="mf")
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    again = load_config(path)
    assert again == cfg


def test_parse_value():
    assert parse_value("3") == 3
    assert parse_value("1e-3") == 1e-3
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("buy") == "buy"


@pytest.mark.parametrize(
    "path", sorted((__import__("pathlib").Path(__file__).parents[1] / "configs").glob("*.toml"))
)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.model in path.name


def test_interest_models_get_the_comirec_protocol_unless_set(tmp_path):
    cfg = load_config(model="comirec-sa")
    assert cfg.data.protocol == "user-split" and cfg.train.select_protocol == "retrieval"
    assert cfg.eval.protocols == ["retrieval"] and cfg.train.metric == "recall@50"
    assert cfg.train.batch_size == 128 and cfg.eval.ks == [20, 50]
    # anything the user sets wins, from a file, a fixed option or an override
    path = tmp_path / "c.toml"
    path.write_text('model = "sasrec"\n[train]\nbatch_size = 64\n')
    cfg = load_config(path, ["eval.ks=[10]"], data__protocol="leave-one-out")
    assert cfg.train.batch_size == 64 and cfg.eval.ks == [10]
    assert cfg.data.protocol == "leave-one-out" and cfg.train.select_protocol == "retrieval"
    # score-all models keep the general defaults
    plain = load_config(model="lightgcn")
    assert plain.data.protocol == "leave-one-out" and plain.train.select_protocol == "full"
