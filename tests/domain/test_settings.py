"""The configuration file is checked when it is read, with errors that name the problem."""

import pytest

from sapphire_domain.errors import ConfigError
from sapphire_domain.settings import DEFAULT_CONFIG_PATH, load_settings


def test_the_default_universe_is_the_four_usd_pairs_at_30_minutes():
    settings = load_settings()
    assert settings.universe.symbols == ("BTC/USD", "ETH/USD", "XRP/USD", "EOS/USD")
    assert settings.universe.timeframe == "30m"
    assert settings.universe.exchange == "replay"


def test_a_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*SAPPHIRE_CONFIG"):
        load_settings(tmp_path / "nope.yaml")


def test_malformed_yaml_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("universe: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("universe: {symbols: [BTC/USD], start: 2020-01-01, timeframe: 7x}", "timeframe"),
        ("universe: {symbols: [BTCUSD], start: 2020-01-01}", "symbols"),
        ("universe: {symbols: [BTC/USD, BTC/USD], start: 2020-01-01}", "more than once"),
        ("universe: {symbols: [], start: 2020-01-01}", "universe.symbols"),
        ("universe: {symbols: [BTC/USD]}", "universe.start"),
        ("universe: {symbols: [BTC/USD], start: 2020-01-01, colour: red}", "colour"),
        ("replay: {speed: 10}", "universe"),
        ("- just a list", "mapping"),
    ],
)
def test_bad_configuration_names_the_offending_field(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_settings(path)


def test_the_default_file_is_part_of_the_project():
    assert DEFAULT_CONFIG_PATH.is_file()
