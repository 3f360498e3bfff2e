import math

import pytest
import yaml

from mixopt.config import load_config, parse_config
from mixopt.errors import ConfigError


def test_defaults_are_valid_and_hash_is_stable():
    config = parse_config({})
    assert config.study.proxies >= 2
    assert config.digest() == parse_config({}).digest()
    assert config.digest() != parse_config({"study": {"proxies": 99}}).digest()


def test_shipped_configs_parse():
    for name in ("smoke", "demo"):
        config = load_config(f"configs/{name}.yaml")
        assert config.name == name


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"studdy": {}}, r"studdy: unknown key"),
        ({"study": {"proxiez": 3}}, r"study\.proxiez: unknown key"),
        ({"study": {"proxies": -4}}, r"study\.proxies: .*greater than or equal to 2"),
        ({"study": {"fidelity": {"short_proxies": 8, "short_tokens": 1.0}}},
         r"study\.fidelity\.short_tokens: .*less than 1"),
        ({"study": {"fidelity": {"short_tokens": 0.5}}}, r"study\.fidelity\.short_proxies: .*required"),
        ({"space": {"max_epochs": math.nan}}, r"space\.max_epochs: .*finite"),
        ({"space": {"target_tokens": -1.0}}, r"space\.target_tokens"),
        ({"space": {"min_weights": {"code": 1.5}}}, r"space\.min_weights: .*\[0, 1\]"),
        ({"objective": {"weights": {"code": -1}}}, r"objective\.weights"),
        ({"proxy": {"lrr": 0.1}}, r"proxy\.lrr: unknown key"),
        ({"proxy": {"lr": math.inf}}, r"proxy: .*lr"),
        ({"proxy": {"tokens": -5}}, r"proxy: .*tokens"),
        ([1, 2], r"top level must be a mapping"),
    ],
)
def test_bad_values_name_the_field(payload, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(payload, "c.yaml")


@pytest.mark.parametrize("off", [None, False, "off"])
def test_fidelity_off_keeps_every_proxy_full_length(off):
    assert parse_config({"study": {"fidelity": off}}, "c.yaml").study.fidelity is None
    on = parse_config({"study": {"fidelity": {"short_proxies": 8}}}, "c.yaml").study.fidelity
    assert on.short_proxies == 8 and on.short_tokens == 0.25


def test_yaml_syntax_error_gives_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("study:\n  proxies: [1, 2\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_yaml(tmp_path):
    payload = {"name": "x", "study": {"proxies": 5, "seed": 3}, "space": {"target_tokens": 1e9}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(payload))
    assert load_config(path).study.seed == 3
