"""Hydra sweep syntax -> Optuna distributions, and sampled values -> Hydra overrides.

Mapping (``name`` is the override key without its ``+``/``++`` prefix):

* ``choice(a, b, ...)`` or ``a,b,...`` -> ``CategoricalDistribution`` keeping each
  value's parsed type (``choice(1, 2.5, adam)`` gives ``int``, ``float``, ``str``).
* ``range(start, stop[, step])`` as upstream's ``hydra-optuna-sweeper`` maps it (its main
  branch, the Optuna >= 4 rewrite): ints -> ``IntDistribution(start, stop, step)``, both ends
  included (Hydra's basic sweeper stops *before* ``stop``: ``range(1,3)`` is 1, 2 there but
  1, 2, 3 here, as upstream); any float bound or step -> ``FloatDistribution(start, stop,
  step=step)``; ``shuffle(range(...))`` -> ``CategoricalDistribution`` of the values Hydra's
  range yields. ``tag(log, range(a, b))`` (step 1) sets ``log=True``. When ``stop - start`` is
  not a multiple of ``step``, Optuna lowers ``stop`` to the last value on the step (and warns).
* ``interval(low, high)`` -> ``FloatDistribution(low, high)``; ``int(interval(...))`` or
  ``tag(int, interval(...))`` -> ``IntDistribution(low, high)`` (both ends inclusive);
  ``tag(log, ...)`` sets ``log=True``.

Anything else (``glob``, deletions with a sweep, unknown tags, list/dict choices) is
rejected with a ``ValueError`` that names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.grammar.utils import escape_special_characters
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

ALLOWED_SYNTAX = (
    "choice(a,b,...) | a,b,... | range(start,stop[,step]) (both ends included) | shuffle(range(...)) | interval(low,high) | "
    "int(interval(low,high)) | tag(log, interval(low,high)) | tag(int, interval(low,high)) | "
    "tag(log, range(start,stop)) | a plain value (passed to every job unchanged)"
)
_CHOICE_TYPES = (str, int, float, bool, type(None))

# Names in Optuna/RDB storages are limited (512 chars); stay well below.
_MAX_STUDY_NAME = 400

_parser: OverridesParser | None = None


def _get_parser() -> OverridesParser:
    global _parser
    if _parser is None:
        _parser = OverridesParser.create()
    return _parser


@dataclass
class SearchSpace:
    """A parsed sweep: Optuna distributions plus the overrides every job gets unchanged.

    Attributes:
        distributions: Optuna param name -> distribution, in a deterministic order.
        override_keys: Optuna param name -> override key as written (``+`` prefix kept).
        fixed: Non-sweep overrides, passed to every job as given.
        fixed_canonical: ``fixed`` normalised (``key=value``), used for the study name.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    override_keys: dict[str, str] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    fixed_canonical: list[str] = field(default_factory=list)

    def overrides_for(self, params: Mapping[str, Any]) -> list[str]:
        """Return the full override list for one trial.

        Args:
            params: Sampled value per Optuna param name (``trial.params``).

        Returns:
            The fixed overrides followed by ``key=value`` for each sampled param.
        """
        sampled = [
            f"{self.override_keys[name]}={format_value(params[name])}"
            for name in self.distributions
        ]
        return [*self.fixed, *sampled]

    def to_json(self) -> str:
        """Return a canonical JSON text of the distributions (sorted by name)."""
        return json.dumps(
            {name: json.loads(distribution_to_json(d)) for name, d in sorted(self.distributions.items())},
            sort_keys=True,
        )


def _bad(where: str, value: str, why: str) -> ValueError:
    return ValueError(f"{where}: cannot use {value!r}: {why}. Allowed: {ALLOWED_SYNTAX}.")


def _param_name(override: Override) -> str:
    return override.get_key_element().lstrip("+~")


def _element(value: Any) -> Any:
    return value.text if isinstance(value, QuotedString) else value


def _check_tags(tags: set[str], allowed: set[str], where: str, value: str, kind: str) -> None:
    unknown = set(tags) - allowed
    if unknown:
        allowed_txt = ", ".join(sorted(allowed)) if allowed else "none"
        raise _bad(where, value, f"tag(s) {sorted(unknown)} not supported on {kind} (allowed: {allowed_txt})")


def _as_int(x: float, where: str, value: str) -> int:
    if isinstance(x, float) and not x.is_integer():
        raise _bad(where, value, f"integer interval bound {x!r} is not a whole number")
    return int(x)


def override_to_distribution(override: Override, where: str) -> BaseDistribution:
    """Map one parsed Hydra sweep override to an Optuna distribution.

    Args:
        override: A sweep override (``override.is_sweep_override()`` is true).
        where: How to name the source in errors, e.g. ``hydra.sweeper.params.lr``.

    Returns:
        The Optuna distribution.

    Raises:
        ValueError: The sweep kind, its tags or its values are not supported.
    """
    value_txt = override.get_value_string()
    if override.is_delete():
        raise _bad(where, value_txt, "a deletion (~key) cannot be swept")
    value = override.value()
    try:
        # Glob sweeps also count as choice sweeps in Hydra but are a `Glob`, not a ChoiceSweep.
        if override.is_choice_sweep() and isinstance(value, ChoiceSweep):
            _check_tags(value.tags, set(), where, value_txt, "choice")
            choices = [_element(x) for x in value.list]
            for c in choices:
                if not isinstance(c, _CHOICE_TYPES):
                    raise _bad(
                        where, value_txt, f"choice values must be str/int/float/bool/null, got {type(c).__name__} {c!r}"
                    )
            return CategoricalDistribution(choices)
        if override.is_range_sweep():
            assert isinstance(value, RangeSweep) and value.start is not None and value.stop is not None
            if value.shuffle:
                _check_tags(value.tags, set(), where, value_txt, "shuffled range")
                values = list(value.range())
                if not values:
                    raise _bad(where, value_txt, "the range is empty")
                return CategoricalDistribution(values)
            step = value.step if value.step is not None else 1
            if step <= 0:
                raise _bad(where, value_txt, f"the step must be positive (got {step!r}), the range running from start up to stop")
            if value.stop < value.start:
                raise _bad(where, value_txt, f"stop {value.stop!r} is below start {value.start!r}")
            if any(isinstance(x, float) for x in (value.start, value.stop, step)):
                _check_tags(value.tags, set(), where, value_txt, "float range")
                return FloatDistribution(float(value.start), float(value.stop), step=float(step))
            _check_tags(value.tags, {"log"}, where, value_txt, "int range")
            if "log" in value.tags and step != 1:
                raise _bad(where, value_txt, "a log-scale range needs step 1 (Optuna samples it continuously)")
            return IntDistribution(int(value.start), int(value.stop), step=int(step), log="log" in value.tags)
        if override.is_interval_sweep():
            assert isinstance(value, IntervalSweep)
            _check_tags(value.tags, {"log", "int"}, where, value_txt, "interval")
            assert value.start is not None and value.end is not None
            log = "log" in value.tags
            as_int = "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int))
            if as_int:
                low, high = _as_int(value.start, where, value_txt), _as_int(value.end, where, value_txt)
                return IntDistribution(low, high, log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
    except ValueError as e:
        if str(e).startswith(where):
            raise
        # Optuna's own range checks (low > high, log with low <= 0, ...).
        raise _bad(where, value_txt, str(e).rstrip(".")) from e
    raise _bad(where, value_txt, "glob() and other sweep kinds cannot be mapped to an Optuna distribution")


def _parse(line: str, where: str) -> Override:
    try:
        return _get_parser().parse_override(line)
    except Exception as e:  # Hydra raises OverrideParseException with a multi-line message
        value = line.split("=", 1)[1] if "=" in line else line
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _bad(where, value, f"Hydra cannot parse it ({first_line})") from e


def _params_value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return format_value(value)
    # YAML lists/dicts in `params` are fixed values, written like on the command line.
    return Override._get_value_element_as_str(value)


def _canonical(override: Override) -> str:
    key = override.get_key_element()
    if override.value_type is None:
        return key
    return f"{key}={override.get_value_element_as_str()}"


def build_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """Combine ``hydra.sweeper.params`` and the command-line overrides into a search space.

    A command-line override of a key replaces the ``params`` entry for that key; a plain
    (non-sweep) value for a key fixes it and removes it from the search space.

    Args:
        params: ``hydra.sweeper.params`` (name -> Hydra sweep string or plain value).
        arguments: The task overrides Hydra passes to the sweeper.

    Returns:
        The search space.

    Raises:
        ValueError: An entry cannot be parsed or mapped.
    """
    # name -> (where, override, line as given); later sources replace earlier ones.
    entries: dict[str, tuple[str, Override, str]] = {}
    for key, value in (params or {}).items():
        line = f"{key}={_params_value_text(value)}"
        where = f"hydra.sweeper.params.{key}"
        override = _parse(line, where)
        entries[_param_name(override)] = (where, override, line)
    for line in arguments:
        where = f"command-line override {line!r}"
        override = _parse(line, where)
        name = _param_name(override)
        entries.pop(name, None)  # keeps command-line order for the replaced key
        entries[name] = (where, override, line)

    space = SearchSpace()
    for name, (where, override, line) in entries.items():
        if override.is_sweep_override():
            space.distributions[name] = override_to_distribution(override, where)
            space.override_keys[name] = override.get_key_element()
        else:
            space.fixed.append(line)
            space.fixed_canonical.append(_canonical(override))
    return space


def _parses_back(text: str, value: str) -> bool:
    try:
        parsed = _get_parser().parse_override(f"k={text}")
    except Exception:
        return False
    if parsed.is_sweep_override():
        return False
    got = _element(parsed.value())
    return isinstance(got, str) and got == value


def format_value(value: Any) -> str:
    """Format a sampled value so that Hydra parses it back to the same value and type.

    Args:
        value: A value sampled by Optuna (None, bool, int, float or str).

    Returns:
        The text for the value part of an override.

    Raises:
        TypeError: The value has another type.
        ValueError: A string cannot be written in a form Hydra parses back.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that round-trips; Hydra parses it (incl. 1e-05, inf, nan).
        return repr(value)
    if isinstance(value, str):
        candidates = (
            escape_special_characters(value),
            QuotedString(text=value, quote=Quote.single).with_quotes(),
            QuotedString(text=value, quote=Quote.double).with_quotes(),
        )
        for text in candidates:
            if _parses_back(text, value):
                return text
        raise ValueError(f"cannot write the string {value!r} as a Hydra override value")
    raise TypeError(f"cannot write a {type(value).__name__} ({value!r}) as a Hydra override value")


def describe_distribution(dist: BaseDistribution) -> str:
    """Write an Optuna distribution in the Hydra sweep syntax that maps to it (for messages).

    Args:
        dist: A distribution, e.g. from a stored trial.

    Returns:
        ``interval(...)``, ``int(interval(...))``, ``range(start, stop, step)`` or
        ``choice(...)``, with ``tag(log, interval(...))`` for log scales (as in the
        ``+search`` presets); ``repr(dist)`` for anything :func:`override_to_distribution`
        never makes.
    """
    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(format_value(c) for c in dist.choices)})"
    if isinstance(dist, FloatDistribution) and dist.step is None:
        text = f"interval({format_value(float(dist.low))}, {format_value(float(dist.high))})"
        return f"tag(log, {text})" if dist.log else text
    if isinstance(dist, IntDistribution) and dist.step == 1:
        text = f"interval({dist.low}, {dist.high})"
        return f"int(tag(log, {text}))" if dist.log else f"int({text})"
    if isinstance(dist, IntDistribution) and not dist.log:
        return f"range({dist.low}, {dist.high}, {dist.step})"
    if isinstance(dist, FloatDistribution) and not dist.log:
        return f"range({format_value(float(dist.low))}, {format_value(float(dist.high))}, {format_value(float(dist.step))})"
    return repr(dist)


def default_study_name(job_name: str, space: SearchSpace, extra: Sequence[str] = (), ignore: Iterable[str] = ()) -> str:
    """Derive a readable, deterministic study name for a sweep.

    The name is ``<job>|<sorted fixed overrides>|space(<params>)=<hash>`` where the hash
    covers the full search space, so changing a range starts a new study instead of
    mixing incompatible distributions into an old one.

    Args:
        job_name: ``hydra.job.name``.
        space: The parsed search space.
        extra: More that tells studies apart (objectives, directions, a custom_search_space),
            appended as given; empty for a single-objective sweep (names as before).
        ignore: Keys whose fixed overrides do not change the task's numbers (the task's declared
            ``run_control`` keys, e.g. cl_sweep's ``progress``): left out, so toggling one resumes the study.

    Returns:
        The study name.
    """
    digest = hashlib.sha1(space.to_json().encode()).hexdigest()[:8]
    ignore = set(ignore)
    fixed = [o for o in space.fixed_canonical if o.lstrip("+~").split("=", 1)[0].strip() not in ignore]
    parts = [job_name, *sorted(fixed), f"space({','.join(sorted(space.distributions))})={digest}", *extra]
    name = "|".join(parts)
    if len(name) > _MAX_STUDY_NAME:
        full = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{name[: _MAX_STUDY_NAME - 16]}..#{full}"
    return name

