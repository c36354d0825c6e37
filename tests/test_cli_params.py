"""Click parameter types: `--strategy` becomes a checked StrategyMix at the command line, or a one-line usage error."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from prefs.samplers import StrategyMix
from rlft.cli import main
from rlft.cli.params import STRATEGY

VALID = "valid: balanced, bald, epig, random, repeat, same_prompt, uncertain"


def test_strategy_param_returns_the_parsed_mix():
    mix = STRATEGY.convert("uncertain:0.7,balanced:0.25,repeat:0.05", None, None)
    assert isinstance(mix, StrategyMix) and dict(mix) == pytest.approx({"uncertain": 0.7, "balanced": 0.25, "repeat": 0.05})
    assert STRATEGY.convert(mix, None, None) is mix  # a default that is already a mix is kept
    assert STRATEGY.convert("", None, None) is None and STRATEGY.convert("  ", None, None) is None  # the store's default


@pytest.mark.parametrize("text, message", [
    ("best", f"unknown pair strategy 'best'; {VALID}"),
    ("random:x", "bad weight 'x' for strategy 'random'"),
    ("random:0", "strategy weights must be positive numbers"),
    ("random,,balanced", f"unknown pair strategy ''; {VALID}"),
])
def test_strategy_param_rejects_bad_text(text, message):
    with pytest.raises(click.BadParameter, match=message):
        STRATEGY.convert(text, None, None)


@pytest.mark.parametrize("command", [
    ["simulate", "--oracle", "warm", "--n", "1"],
    ["ui", "--no-generate"],
    ["loop", "--prompts", "toy", "--oracle", "big"],
])
def test_a_bad_strategy_flag_is_one_line_naming_the_valid_names_exit_2(command):
    result = CliRunner().invoke(main, [*command, "--strategy", "best"], prog_name="rlft")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output == (f"Error: rlft {command[0]}: Invalid value for '--strategy': "
                             f"unknown pair strategy 'best'; {VALID}\n")
