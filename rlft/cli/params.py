"""Click parameter types shared by several commands: each turns a flag's text into the library's value once,
at the command line, and reports bad text as a usage error naming the valid choices."""

from __future__ import annotations

import click


class StrategyParam(click.ParamType):
    """`--strategy`: a pair strategy or weighted mix ("uncertain:0.7,balanced:0.25,repeat:0.05") read into a
    `prefs.samplers.StrategyMix`, which the command passes on as it is. Empty text is None (the store's
    default mix)."""

    name = "text"  # the metavar --help shows (TEXT, as for a plain string option)

    def convert(self, value, param, ctx):
        from prefs.errors import UserError
        from prefs.samplers import StrategyMix, parse_mix  # lazily: `rlft --help` imports no store code

        if value is None or isinstance(value, StrategyMix):
            return value
        if not str(value).strip():
            return None
        try:
            return parse_mix(str(value))
        except UserError as e:
            self.fail(str(e), param, ctx)


STRATEGY = StrategyParam()
