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

The paper's own components are registered through exactly this API (cl_sweep.components.activations,
cl_sweep.components.optimizers); nothing built in has a private path. A name already registered is refused.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import keyword
import math
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = [
    "Component", "Param", "Registry", "ACTIVATIONS", "OPTIMIZERS", "MODELS", "register_activation", "register_optimizer",
    "register_model", "register_strategy", "STRATEGIES", "register_benchmark", "BENCHMARKS", "register_logger", "LOGGERS",
    "positive", "nonnegative", "finite", "unit_interval", "half_open_unit", "positive_int", "between", "divides",
]

Check = Callable[[Any, Mapping], Optional[str]]


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name, type (from the annotation, else the default's type) and default."""

    name: str  # the config key
    type: Any
    default: Any = dataclasses.MISSING
    arg: str | None = None  # the function's argument when it differs: `lambda_` for the key `lambda`


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
    # Keyword arguments the engine fills in, not hyperparameters (a model's `input_size`,
    # `num_classes`, `epochs_per_task`, nnx's `rngs`): those of `Registry.injected` that fn takes.
    injected: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)  # what a kind records beside (a model's own activation)
    common: tuple[str, ...] = ()  # keys every component of the kind has (a benchmark's schedule), passed only if fn takes them

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

    def call(self, *args: Any, **hyperparameters: Any) -> Any:
        """``fn(*args, **hyperparameters)`` by config key (a key that is a Python keyword, such as
        a strategy's ``lambda``, is the function's ``lambda_``)."""
        renamed = {p.name: p.arg for p in self.params if p.arg}
        given = {k: v for k, v in hyperparameters.items() if k not in self.common}
        return self.fn(*args, **{renamed.get(k, k): v for k, v in given.items()})

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if p.default is not dataclasses.MISSING}

    def schema(self) -> type:
        """The config node's dataclass: ``name`` fixed to the component's, then one typed field per hyperparameter."""
        fields = [("name", str, field(default=self.name))]
        for p in self.params:
            default = dataclasses.MISSING if p.default is dataclasses.MISSING else p.default
            kind = _config_type(p.type)
            if isinstance(default, (list, dict, tuple)):
                d = list(default) if isinstance(default, tuple) else default
                fields.append((p.name, kind, field(default_factory=lambda d=d: type(d)(d))))
            else:
                fields.append((p.name, kind, field(default=default)))
        cls_name = "".join(part.capitalize() for part in f"{self.name}_{self.kind}_config".split("_"))
        return dataclasses.make_dataclass(cls_name, fields)

    def check(self, node: Mapping, cfg: Mapping) -> list[tuple[str, Any, str]]:
        """The (key, value, what is allowed) of every hyperparameter in ``node`` that fails its check."""
        bad = []
        for key, check in self.checks.items():
            if key in node:
                value = node[key]
                if hasattr(value, "_is_missing"):  # an OmegaConf list or dict: the check sees plain values
                    from omegaconf import OmegaConf

                    value = OmegaConf.to_container(value, resolve=True)
                allowed = check(value, cfg)
                if allowed is not None:
                    bad.append((key, value, allowed))
        return bad


def _config_type(t: Any) -> Any:
    """The annotation as OmegaConf can type a field: a union that holds a container (``int |
    list[int]``) or a type OmegaConf cannot check becomes Any (the component's checks do)."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1 and _config_type(args[0]) is args[0]:
            return Optional[args[0]]
        return Any
    if t in (int, float, bool, str) or t is Any or origin in (list, dict):
        return t
    return Any


def _linen_class(fn: Any) -> bool:
    """Whether fn is a flax.linen Module class (its dataclass fields are its hyperparameters)."""
    if not isinstance(fn, type) or "flax.linen" not in sys.modules:  # not imported: fn cannot be one
        return False
    try:
        from flax import linen
    except ImportError:  # pragma: no cover - flax is a dependency
        return False
    return issubclass(fn, linen.Module)


def _linen_params(kind: str, name: str, cls: type, injected: tuple[str, ...]) -> tuple[tuple[Param, ...], tuple[str, ...]]:
    hints = typing.get_type_hints(cls)
    out, inj = [], []
    for f in dataclasses.fields(cls):
        if f.name in ("parent", "name") or not f.init:
            continue
        if f.name in injected:
            inj.append(f.name)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        out.append(Param(f.name, hints.get(f.name, Any), default))
    return tuple(out), tuple(inj)


def _params(kind: str, name: str, fn: Callable, leading: int, injected: tuple[str, ...] = ()) -> tuple[tuple[Param, ...], tuple[str, ...]]:
    """The keyword-only parameters of ``fn`` (after ``leading`` positional ones) as hyperparameters,
    and which of the ``injected`` names fn takes (the engine fills those in)."""
    if _linen_class(fn):
        return _linen_params(kind, name, fn, injected)
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
    out, inj = [], []
    for p in sig.parameters.values():
        if p.kind != p.KEYWORD_ONLY:
            continue
        if p.name in injected:
            inj.append(p.name)
            continue
        ann = hints.get(p.name, p.annotation)
        if ann is inspect.Parameter.empty:
            if p.default is inspect.Parameter.empty or p.default is None:
                ann = Any
            else:
                ann = type(p.default)
        default = dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
        if p.name.endswith("_") and keyword.iskeyword(p.name[:-1]):  # `lambda_` is the key `lambda`
            out.append(Param(p.name[:-1], ann, default, arg=p.name))
        else:
            out.append(Param(p.name, ann, default))
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        raise TypeError(f"{kind} {name!r}: **kwargs cannot be a schema; name each hyperparameter as a keyword-only argument")
    return tuple(out), tuple(inj)


class Registry(Mapping[str, Component]):
    """The components of one kind, by name. ``register`` is its decorator; lookups list the allowed names."""

    def __init__(self, kind: str, leading: int, builtin_module: str, *, all_static: bool = False,
                 injected: tuple[str, ...] = (), common: tuple[Param, ...] = (), common_checks: Mapping[str, Check] | None = None):
        self.kind = kind
        self.leading = leading  # positional arguments before the hyperparameters (an activation's x)
        self.builtin_module = builtin_module  # where cl_sweep's own components of this kind are registered
        self.all_static = all_static  # every hyperparameter shapes the program (a model's)
        self.injected = injected  # keyword arguments the engine fills in (not config keys)
        self.common = common  # keys every component has, after its own (a benchmark's batch size, epochs, limit)
        self.common_checks = dict(common_checks or {})
        self._items: dict[str, Component] = {}

    def register(self, name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                 label: str | None = None, meta: Mapping[str, Any] | None = None):
        """Decorator: adds ``fn`` under ``name`` and stores its config node for Hydra (group ``<kind>``)."""

        def deco(fn):
            module = getattr(fn, "__module__", None) or ""
            if not (module == self.builtin_module or module.startswith(self.builtin_module + ".")):
                importlib.import_module(self.builtin_module)  # built-ins first: a clash names the user's, not ours
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"{self.kind} name {name!r} must be a Python identifier (it is a config option name)")
            if name in self._items:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (by {self._items[name].source or 'cl_sweep'}); "
                    f"choose another name"
                )
            params, injected = _params(self.kind, name, fn, self.leading, self.injected)
            own = {p.name for p in params}
            extra = tuple(p for p in self.common if p.name not in own)  # fn may take a common key itself
            params = params + extra
            keys = {p.name for p in params}
            for key in (*static, *(checks or {})):
                if key not in keys:
                    raise ValueError(f"{self.kind} {name!r}: {key!r} is not one of its keyword-only hyperparameters {sorted(keys)}")
            if "name" in keys:
                raise ValueError(f"{self.kind} {name!r}: 'name' is reserved (it is the option's name in the config)")
            fixed = tuple(p.name for p in params) if self.all_static else tuple(static)
            all_checks = {**{k: c for k, c in self.common_checks.items() if k in {p.name for p in extra}}, **(checks or {})}
            component = Component(self.kind, name, fn, params, fixed, all_checks, label, module,
                                  injected, dict(meta or {}), tuple(p.name for p in extra))
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

    if any(keyword.iskeyword(p.name) for p in component.params):
        # A dataclass cannot have a field named `lambda`: an untyped node, and the checks do the types.
        node = OmegaConf.create({"name": component.name, **component.defaults})
    else:
        node = OmegaConf.structured(component.schema())
    # Typed (Hydra converts and checks values) but open: a misspelt key, with or without `+`, then
    # reaches cl_sweep.config.check_keys, whose one paragraph lists the keys the component has.
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(group=component.kind, name=component.name, node=node, provider="cl_sweep")


ACTIVATIONS = Registry("activation", leading=1, builtin_module="cl_sweep.components.activations")
OPTIMIZERS = Registry("optimizer", leading=0, builtin_module="cl_sweep.components.optimizers")
#: A model's hyperparameters are all static (they are its shapes and its program); the engine
#: fills in ``input_size``, ``num_classes`` and ``epochs_per_task`` (from the benchmark) and, for a
#: flax.nnx module, ``rngs``, where the function takes them.
MODELS = Registry("model", leading=0, builtin_module="cl_sweep.models", all_static=True,
                  injected=("input_size", "num_classes", "epochs_per_task", "rngs"))
STRATEGIES = Registry("strategy", leading=0, builtin_module="cl_sweep.components.strategies")


def _limit(null_means: str) -> Check:
    """The check of a count that may be null: null (``null_means``) or a positive integer."""
    def check(v: Any, cfg: Mapping) -> str | None:
        return None if v is None or (_int(v) and v >= 1) else f"it must be null ({null_means}) or a positive integer"

    return check


def _positive_int(v: Any, cfg: Mapping) -> str | None:
    return positive_int(v, cfg)


#: Every benchmark also has the schedule keys: batch size, epochs per task, and (smoke tests) the
#: first N examples of each task's shuffle and of each task's test examples; a benchmark function
#: takes them only if it needs them.
BENCHMARKS = Registry(
    "benchmark", leading=0, builtin_module="cl_sweep.components.benchmarks", all_static=True,
    common=(Param("batch_size", int, 64), Param("epochs_per_task", int, 1), Param("limit_per_task", Optional[int], None),
            Param("test_limit_per_task", Optional[int], None)),
    common_checks={"batch_size": _positive_int, "epochs_per_task": _positive_int, "limit_per_task": _limit("all examples"),
                   "test_limit_per_task": _limit("every test example")},
)


def _on_error(v: Any, cfg: Mapping) -> str | None:
    return None if v in ("fail", "warn") else (
        "it must be fail (a tracker that cannot start stops the job before training) or warn (one warning, "
        "the job trains without it)")


#: Experiment trackers (cl_sweep.tracking): every logger also has ``on_error``, what a tracker that
#: cannot start does to the job. Their keys configure the tracker, never the training.
LOGGERS = Registry(
    "logger", leading=0, builtin_module="cl_sweep.tracking.loggers",
    common=(Param("on_error", str, "fail"),), common_checks={"on_error": _on_error},
)


def register_activation(name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                        label: str | None = None, sparse_gradient: bool = False):
    """Registers ``fn(x, *, **hyperparameters) -> y``: x holds pre-activations, hidden units on the last axis.

    ``sparse_gradient=True`` says that only a few units per example pass a gradient (Top-K, LWTA: the
    rest get exactly zero). On a CPU the engine then builds the first layer's weight gradient from
    those entries alone inside its fused update kernel (``engine.sparse_update_applies``). It only
    decides speed: the kernel is right for any gradient, slow for a dense one."""
    meta = {"sparse_gradient": True} if sparse_gradient else None
    return ACTIVATIONS.register(name, static=static, checks=checks, label=label, meta=meta)


def register_optimizer(name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                       label: str | None = None):
    """Registers ``fn(*, **hyperparameters) -> optax.GradientTransformation`` (traced ones arrive as arrays)."""
    return OPTIMIZERS.register(name, static=static, checks=checks, label=label)


def register_model(name: str, *, checks: Mapping[str, Check] | None = None, label: str | None = None,
                   activation: str | None = None, optimizer: str | None = None):
    """Registers a model: a function whose keyword-only parameters are the model's hyperparameters
    (all static: they decide the program) and which returns one of

    - a ``flax.linen.Module`` whose ``__call__(x, activation)`` returns the logits (or ``(logits,
      hidden)``); the function may also be the Module class itself (its fields the hyperparameters);
    - a ``flax.nnx.Module`` built from the ``rngs`` keyword argument the function then takes;
    - a `cl_sweep.models.Model` (plain functions: init, apply, and optional after-step parts).

    ``input_size``, ``num_classes`` and ``epochs_per_task``, when the function takes them, are
    filled in from the benchmark. ``activation``/``optimizer``: the name the result records when
    the model brings its own nonlinearity or learning rule (the group is then unused).
    """
    meta = {k: v for k, v in (("activation", activation), ("optimizer", optimizer)) if v is not None}
    return MODELS.register(name, checks=checks, label=label, meta=meta)


def register_strategy(name: str, *, static: tuple[str, ...] = (), checks: Mapping[str, Check] | None = None,
                      label: str | None = None):
    """Registers a continual-learning strategy: ``fn(*, **hyperparameters) -> cl_sweep.components.strategies.Regulariser``
    (or None: no regulariser). Traced hyperparameters arrive as arrays, per member, as an optimizer's;
    a keyword-named key is the argument with an underscore (``lambda_`` for ``strategy.lambda``). A
    static ``samples`` sets how many examples of each task the importance is estimated on (256)."""
    return STRATEGIES.register(name, static=static, checks=checks, label=label)


def register_benchmark(name: str, *, checks: Mapping[str, Check] | None = None, label: str | None = None):
    """Registers a benchmark: ``fn(*, **hyperparameters) -> cl_sweep.components.benchmarks.Benchmark``, a data set
    and its task split. Its hyperparameters are static (they decide the data and the tasks); every
    benchmark also has ``batch_size``, ``epochs_per_task`` and ``limit_per_task``."""
    return BENCHMARKS.register(name, checks=checks, label=label)


def register_logger(name: str, *, checks: Mapping[str, Check] | None = None, label: str | None = None):
    """Registers an experiment tracker: ``fn(*, **keys) -> cl_sweep.tracking.Tracker`` (or None: logs
    nothing). Called once before anything trains, so a tracker that cannot start (a missing
    package, a bad URI) raises there, never mid-run; its ``start``/``log``/``end`` calls then
    happen on the host at task boundaries only."""
    if name == "many":
        raise ValueError("logger 'many' is reserved: it is the option that combines several loggers (logger=many logger.loggers=[...])")
    register = LOGGERS.register(name, checks=checks, label=label)

    def deco(fn):
        register(fn)
        _store_many_loggers()  # logger=many holds every registered logger's keys
        return fn

    return deco


def _store_many_loggers() -> None:
    """``logger=many``: ``loggers`` names the trackers to use, each with its keys under its own name
    (``logger.mlflow.tracking_uri=...``); ``on_error`` applies to all of them."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = {"name": "many", "loggers": [], "on_error": "fail"}
    for name, component in LOGGERS.items():
        if name != "none":
            node[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in component.defaults.items() if k != "on_error"}
    node = OmegaConf.create(node)
    OmegaConf.set_struct(node, False)
    ConfigStore.instance().store(group="logger", name="many", node=node, provider="cl_sweep")


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


_ABSENT = object()


def _lookup(cfg: Mapping, dotted: str) -> Any:
    """The value at ``dotted``, or _ABSENT when the config has no such key (another model's keys)."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _ints(value: Any) -> list[int] | None:
    """A width or a list of widths (a deep MLP's ``hidden_size``) as a list; None when not integers."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return values if values and all(_int(v) and v >= 1 for v in values) else None


def between(low: int, high: str | int) -> Check:
    """An integer in low..high, where ``high`` may name another key (``"model.hidden_size"``; for a
    list of widths, the narrowest). A key the config does not have (another model's) is not checked."""

    def check(v: Any, cfg: Mapping) -> str | None:
        if isinstance(high, str):
            widths = _ints(_lookup(cfg, high))
            if widths is None:  # absent, or itself invalid (its own check reports it)
                return None if _int(v) and v >= low else f"it must be an integer >= {low}"
            top = min(widths)
        else:
            top = high
        if _int(v) and low <= v <= top:
            return None
        return f"it must be an integer in {low}..{top}" + (f" ({high})" if isinstance(high, str) else "")

    return check


def divides(dotted: str) -> Check:
    """A positive integer that divides another key's value (LWTA's groups and the hidden size; every
    width of a list). A key the config does not have is not checked."""

    def check(v: Any, cfg: Mapping) -> str | None:
        widths = _ints(_lookup(cfg, dotted))
        if widths is None:
            return None if _int(v) and v >= 1 else "it must be a positive integer"
        if _int(v) and v >= 1 and all(w % v == 0 for w in widths):
            return None
        total = math.gcd(*widths)
        divisors = [d for d in range(1, total + 1) if total % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        value = widths[0] if len(widths) == 1 else widths
        return f"it must divide {dotted}={value} (allowed: {shown})"

    return check
