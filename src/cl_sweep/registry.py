"""One registry for every kind of component: a component is one function, and its keyword-only
parameters are its hyperparameters.

    @cl_sweep.register_activation("shifted_relu")
    def shifted_relu(x, *, shift: float = 0.5):
        return jax.nn.relu(x - shift)

    @cl_sweep.register_optimizer("adagrad_wd")
    def adagrad_wd(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))

What the signature gives:

- the config schema: ``activation=shifted_relu`` composes with no YAML file, as the node
  ``{name: shifted_relu, shift: 0.5}``, typed by the annotations (a string for a float is refused
  when Hydra composes; a key the function does not take is refused by `cl_sweep.config.validate`);
- which hyperparameters are traced: all of them, unless the decorator names them ``static``
  (``static=("groups",)``). Traced ones are arrays inside the compiled program, so members of one
  population may differ in them and a sweep over them compiles once; static ones change the
  program (a shape, a Python branch) and split a sweep into one program per value;
- value checks beside the function: ``checks={"k": between(1, "model.hidden_size")}``, each a
  callable ``(value, cfg) -> None | str`` that returns what is allowed when the value is not.

The paper's own components are registered through exactly this API (cl_sweep.activations,
cl_sweep.optimizers); nothing built in has a private path. A name already registered is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "Component", "Param", "Registry", "ACTIVATIONS", "OPTIMIZERS", "register_activation", "register_optimizer",
    "positive", "nonnegative", "finite", "unit_interval", "half_open_unit", "positive_int", "between", "divides",
]

Check = Callable[[Any, Mapping], Optional[str]]


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name, type (from the annotation, else the default's type) and default."""

    name: str
    type: Any
    default: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Component:
    """A registered component: the function, its hyperparameters, and how the engine treats them."""

    kind: str
    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...]
    static: tuple[str, ...] = ()
    checks: Mapping[str, Check] = field(default_factory=dict)
    label: str | None = None  # display name in tables and figures (default: the name)
    source: str = ""  # the module that registered it

    @property
    def keys(self) -> tuple[str, ...]:
        """Every hyperparameter, in the signature's order (the config node's keys after ``name``)."""
        return tuple(p.name for p in self.params)

    @property
    def traced(self) -> tuple[str, ...]:
        """Hyperparameters passed as arrays: they may differ between members of one population."""
        return tuple(k for k in self.keys if k not in self.static)

    # The optimizer registry's older names for the same things.
    @property
    def factory(self) -> Callable[..., Any]:
        return self.fn

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        return self.traced

    @property
    def display(self) -> str:
        return self.label or self.name

    def schema(self) -> type:
        """The config node's dataclass: ``name`` fixed to the component's, then one typed field per hyperparameter."""
        fields = [("name", str, field(default=self.name))]
        for p in self.params:
            default = dataclasses.MISSING if p.default is dataclasses.MISSING else p.default
            if isinstance(default, (list, dict)):
                fields.append((p.name, p.type, field(default_factory=lambda d=default: type(d)(d))))
            else:
                fields.append((p.name, p.type, field(default=default)))
        cls_name = "".join(part.capitalize() for part in f"{self.name}_{self.kind}_config".split("_"))
        return dataclasses.make_dataclass(cls_name, fields)

    def check(self, node: Mapping, cfg: Mapping) -> list[tuple[str, Any, str]]:
        """The (key, value, what is allowed) of every hyperparameter in ``node`` that fails its check."""
        bad = []
        for key, check in self.checks.items():
            if key in node:
                allowed = check(node[key], cfg)
                if allowed is not None:
                    bad.append((key, node[key], allowed))
        return bad


def _params(kind: str, name: str, fn: Callable, leading: int) -> tuple[Param, ...]:
    """The keyword-only parameters of ``fn`` (after ``leading`` positional ones) as hyperparameters."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{kind} {name!r}: cannot read the signature of {fn!r} ({e})") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults' types
        hints = {}
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != leading:
        what = "one positional argument (the pre-activations)" if leading == 1 else "no positional argument"
        raise TypeError(
            f"{kind} {name!r}: {fn.__qualname__}{sig} must take {what}, then its hyperparameters as "
            f"keyword-only arguments (after a `*`), each with a default or an annotation"
        )
    out = []
    for p in sig.parameters.values():
        if p.kind != p.KEYWORD_ONLY:
            continue
        ann = hints.get(p.name, p.annotation)
        if ann is inspect.Parameter.empty:
            if p.default is inspect.Parameter.empty or p.default is None:
                ann = Any
            else:
                ann = type(p.default)
        default = dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
        out.append(Param(p.name, ann, default))
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        raise TypeError(f"{kind} {name!r}: **kwargs cannot be a schema; name each hyperparameter as a keyword-only argument")
    return tuple(out)


class Registry(Mapping[str, Component]):
    """The components of one kind, by name. ``register`` is its decorator; lookups list the allowed names."""

    def __init__(self, kind: str, leading: int, builtin_module: str):
        self.kind = kind
        self.leading = leading  # positional arguments before the hyperparameters (an activation's x)
        self.builtin_module = builtin_module  # where cl_sweep's own components of this kind are registered
        self._items: dict[str, Component] = {}

    def register(self, name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                 label: str | None = None):
        """Decorator: adds ``fn`` under ``name`` and stores its config node for Hydra (group ``<kind>``)."""

        def deco(fn):
            if getattr(fn, "__module__", None) != self.builtin_module:
                importlib.import_module(self.builtin_module)  # built-ins first: a clash names the user's, not ours
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{self.kind} name {name!r} must be a Python identifier (it is a config option name)")
            if name in self._items:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name].source or 'cl_sweep'}); "
                    f"choose another name"
                )
            params = _params(self.kind, name, fn, self.leading)
            keys = {p.name for p in params}
            for key in (*static, *(checks or {})):
                if key not in keys:
                    raise ValueError(f"{self.kind} {name!r}: {key!r} is not one of its keyword-only hyperparameters {sorted(keys)}")
            if "name" in keys:
                raise ValueError(f"{self.kind} {name!r}: 'name' is reserved (it is the option's name in the config)")
            component = Component(self.kind, name, fn, params, tuple(static), dict(checks or {}), label,
                                  getattr(fn, "__module__", ""))
            self._items[name] = component
            _store_config(component)
            return fn

        return deco

    def lookup(self, name: str) -> Component:
        """The component registered as ``name``; an unknown name raises ValueError listing the allowed ones."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self._items)}") from None

    def unregister(self, name: str) -> None:
        """Removes a component (tests; a plugin reloaded in the same process)."""
        self._items.pop(name, None)

    def __getitem__(self, name: str) -> Component:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _store_config(component: Component) -> None:
    """Makes ``<kind>=<name>`` a config option: the schema node in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = OmegaConf.structured(component.schema())
    # Typed (Hydra converts and checks values) but open: a misspelt key, with or without `+`, then
    # reaches cl_sweep.config.check_keys, whose one paragraph lists the keys the component has.
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(group=component.kind, name=component.name, node=node, provider="cl_sweep")


ACTIVATIONS = Registry("activation", leading=1, builtin_module="cl_sweep.activations")
OPTIMIZERS = Registry("optimizer", leading=0, builtin_module="cl_sweep.optimizers")


def register_activation(name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                        label: str | None = None):
    """Registers ``fn(x, *, **hyperparameters) -> y``: x holds pre-activations, hidden units on the last axis."""
    return ACTIVATIONS.register(name, static=static, checks=checks, label=label)


def register_optimizer(name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                       label: str | None = None):
    """Registers ``fn(*, **hyperparameters) -> optax.GradientTransformation`` (traced ones arrive as arrays)."""
    return OPTIMIZERS.register(name, static=static, checks=checks, label=label)


# --- value checks: (value, cfg) -> None when allowed, else what is allowed ------------------------
def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive(v: Any, cfg: Mapping) -> str | None:
    return None if _number(v) and v > 0 else "it must be a positive number (> 0)"


def nonnegative(v: Any, cfg: Mapping) -> str | None:
    return None if _number(v) and v >= 0 else "it must be a number >= 0"


def finite(v: Any, cfg: Mapping) -> str | None:
    return None if _number(v) else "it must be a finite number"


def unit_interval(v: Any, cfg: Mapping) -> str | None:
    """[0, 1): decays, momenta, Adam's betas."""
    return None if _number(v) and 0.0 <= v < 1.0 else "it must lie in [0, 1)"


def half_open_unit(v: Any, cfg: Mapping) -> str | None:
    """(0, 1]: a decay rate."""
    return None if _number(v) and 0.0 < v <= 1.0 else "it must lie in (0, 1]"


def positive_int(v: Any, cfg: Mapping) -> str | None:
    return None if _int(v) and v >= 1 else "it must be a positive integer"


def _lookup(cfg: Mapping, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def between(low: int, high: str | int) -> Check:
    """An integer in low..high, where ``high`` may name another key (``"model.hidden_size"``)."""

    def check(v: Any, cfg: Mapping) -> str | None:
        top = _lookup(cfg, high) if isinstance(high, str) else high
        if _int(v) and low <= v <= top:
            return None
        return f"it must be an integer in {low}..{top}" + (f" ({high})" if isinstance(high, str) else "")

    return check


def divides(dotted: str) -> Check:
    """A positive integer that divides another key's value (LWTA's groups and the hidden size)."""

    def check(v: Any, cfg: Mapping) -> str | None:
        total = _lookup(cfg, dotted)
        if _int(v) and v >= 1 and total % v == 0:
            return None
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        return f"it must divide {dotted}={total} (allowed: {shown})"

    return check
