"""Click parameter types shared by several commands: each turns a flag's text into the library's value once,
at the command line, and reports bad text as a usage error naming the valid choices."""

from __future__ import annotations

import math

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


class FiniteFloatParam(click.ParamType):
    """A number flag that refuses `nan`, `inf` and `-inf` (click's FLOAT and FloatRange accept all three, and
    a NaN guidance scale made black images), optionally within bounds. `--help` shows it as FLOAT, like
    click's own type; say a bound in the flag's help text, or let the library check it with its own words."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False,
                 max_open: bool = False):
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and self._inside(value):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        if not self._inside(number):
            self.fail(f"{value!r} is not {self._describe()}.", param, ctx)
        return number

    def _inside(self, x: float) -> bool:
        below = self.min is not None and (x <= self.min if self.min_open else x < self.min)
        above = self.max is not None and (x >= self.max if self.max_open else x > self.max)
        return not (below or above)

    def _describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        if self.min is not None:
            return f"{'>' if self.min_open else '>='} {self.min:g}"
        return f"{'<' if self.max_open else '<='} {self.max:g}"

    def __repr__(self) -> str:
        return "FINITE_FLOAT" if self.min is None and self.max is None else f"FiniteFloat({self._describe()})"


FINITE_FLOAT = FiniteFloatParam()
"""A float flag that must be a finite number: every float flag of rlft uses it (or a bounded FiniteFloatParam)."""
