"""A search space from Hydra's sweep syntax: each sweep override becomes an Optuna distribution.

    choice(a, b, c)               CategoricalDistribution([a, b, c])
    range(1, 9) / range(0, 1, 0.25)   IntDistribution(1, 8) / FloatDistribution(0, 0.75, step=0.25)
    interval(1e-4, 1e-1)          FloatDistribution(1e-4, 1e-1)   (Hydra reads an interval as floats)
    tag(log, interval(...))       the same with log=True

`range` keeps Python's meaning: the stop is not included. Any other override is fixed: every
trial gets it as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class SearchSpaceError(ValueError):
    """A sweep override that Optuna cannot search."""


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """(the searched keys and their distributions, the fixed overrides) of `overrides`.

    A key given twice keeps its last value, as Hydra does (the command line after the config's
    `hydra.sweeper.params`); a fixed value removes the key from the searched ones."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
    return distributions, list(fixed.values())


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (see the module's docstring)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if all(isinstance(v, int) for v in (start, stop, step)):
            if step <= 0 or stop - step < start:
                raise SearchSpaceError(f"{key}: range({start}, {stop}, {step}) holds no value to search.")
            last = start + (stop - 1 - start) // step * step
            return IntDistribution(start, last, step=step)
        items = list(override.sweep_iterator(transformer=Transformer.identity))
        if not items:
            raise SearchSpaceError(f"{key}: range({start}, {stop}, {step}) holds no value to search.")
        return FloatDistribution(float(items[0]), float(items[-1]), step=float(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if value.start >= value.end or (log and value.start <= 0):
            raise SearchSpaceError(
                f"{key}: interval({value.start}, {value.end}) needs start < end"
                + (" and start > 0 on a log scale." if log else ".")
            )
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SearchSpaceError(
        f"{key}: {override.input_line} is not a sweep Optuna can search; use choice(...), range(...) "
        "or interval(...), with tag(log, ...) for a log scale."
    )


def trial_overrides(params: dict[str, Any]) -> list[str]:
    """The overrides that give a job a trial's parameters (a string is quoted when Hydra's
    override grammar needs it)."""
    return [f"{key}={_value(value)}" for key, value in params.items()]


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    plain = text.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum()
    return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
