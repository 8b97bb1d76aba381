"""The service's configuration file is checked when it is read; costs are the fill model's own."""

import pytest

from sapphire_domain.errors import ConfigError
from sapphire_domain.fill_model import CostModel
from sapphire_exec.config import load_exec_settings


def write(tmp_path, text):
    path = tmp_path / "exec.yaml"
    path.write_text(text)
    return path


def test_paper_costs_are_the_backtesters_cost_model(tmp_path):
    path = write(tmp_path, "venue:\n  paper:\n    cost: {taker_fee_bps: 7.5}\n")
    settings = load_exec_settings(path, environ={"SAPPHIRE_STATE_DIR": str(tmp_path)})
    assert settings.venue.paper.cost == CostModel(taker_fee_bps=7.5)


def test_a_misspelt_cost_field_is_refused(tmp_path):
    path = write(tmp_path, "venue:\n  paper:\n    cost: {taker_fee: 7.5}\n")
    with pytest.raises((ConfigError, ValueError), match="taker_fee"):
        load_exec_settings(path, environ={"SAPPHIRE_STATE_DIR": str(tmp_path)})


def test_a_negative_taker_fee_is_refused_with_its_name(tmp_path):
    path = write(tmp_path, "venue:\n  paper:\n    cost: {taker_fee_bps: -1}\n")
    with pytest.raises(ConfigError, match="taker_fee_bps"):
        load_exec_settings(path, environ={"SAPPHIRE_STATE_DIR": str(tmp_path)})
