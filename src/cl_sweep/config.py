"""The top-level config schema, registered with Hydra, and the value checks run before training.

Activations, optimizers, models, strategies and benchmarks have no schema here: each is a
registered function whose keyword-only signature is its config node (cl_sweep.components.registry), with its
value checks beside it. `validate` runs every component's checks and the top level's, before
anything trains; `check_keys` refuses a key a component does not have, however it was given.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

#: The longest folder name most file systems take (NAME_MAX, in bytes).
NAME_MAX = 255


def fit_dirname(name: str, limit: int = NAME_MAX) -> str:
    """``name`` with every ``/``-separated part longer than ``limit`` bytes cut to fit: its first bytes,
    ``~`` and 16 hex digits of the part's SHA-256, so distinct parts stay distinct and the same part
    always gives the same folder. Shorter parts are left exactly as they are.

    The sweep presets name a job's folder after its overrides (``hydra.job.override_dirname``); a grid
    point with many overrides would otherwise make a name the file system refuses (errno 36). The
    presets' ``hydra.sweep.subdir`` reads it through the ``cl_sweep.fit_dirname`` resolver.
    """
    parts = []
    for part in str(name).split("/"):
        raw = part.encode()
        if len(raw) > limit:
            tag = "~" + hashlib.sha256(raw).hexdigest()[:16]
            part = raw[: limit - len(tag)].decode(errors="ignore") + tag
        parts.append(part)
    return "/".join(parts)


OmegaConf.register_new_resolver("cl_sweep.fit_dirname", fit_dirname, replace=True)


def config_dir() -> str:
    """conf/ inside an installed wheel, else the repository's top-level conf/ (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("cl_sweep: cannot find the config folder conf/ (reinstall the package)")


class ConfigError(ValueError):
    """A config value outside what the component accepts; its message is one readable paragraph."""


# --- top level ----------------------------------------------------------------------------------
@dataclass
class EarlyStopConfig:
    # The reference's sweep speed-up: after `after_seeds` seeds, skip the rest when their mean
    # final accuracy is below `threshold`.
    enabled: bool = False
    after_seeds: int = 2
    threshold: float = 0.65


@dataclass
class Config:
    activation: Any = MISSING
    optimizer: Any = MISSING
    benchmark: Any = MISSING
    model: Any = MISSING
    strategy: Any = MISSING  # a continual-learning regulariser; `none` by default
    logger: Any = MISSING  # experiment trackers (cl_sweep.tracking); `none` by default
    seed: int = 0  # first seed; the job trains seeds seed, seed+1, ..., seed+n_seeds-1
    n_seeds: int = 5
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    # Modules (names on the Python path, or paths to .py files) that register components, imported
    # before the config is composed (cl_sweep.components.plugins); installed `cl_sweep.plugins` entry points load always.
    plugins: list[str] = field(default_factory=list)
    data_dir: Optional[str] = None  # MNIST cache; default $CL_SWEEP_DATA_DIR or ~/.cache/cl_sweep
    # Per-task progress bars; null: on for a single job, off inside a multirun (the sweep's line
    # stands in: cl_sweep.progress). true/false force them on or off.
    progress: Optional[bool] = None
    sweep_progress: bool = True  # the sweep's one line (jobs done/total, models/s, ETA, failures) in a multirun
    skip_completed: bool = True  # a job whose result.json is complete for the same overrides is not re-run
    # A label for this run's results: the analysis keys results by it (else by their +sweep=/+search=
    # preset), so runs of two tags or presets pool into one grid point only when asked (make tables POOL=).
    tag: Optional[str] = None
    # Write into the checkout's results/ from code with uncommitted changes (refused by default:
    # see cl_sweep.results.check_results_folder).
    allow_dirty_results: bool = False
    # XLA/BLAS CPU threads of the job's process. null: follow the launcher (joblib: CPUs // n_jobs,
    # submitit: cpus_per_task; others: XLA's default, all CPUs). Applied before XLA starts: see cli.apply_cpu_threads.
    cpu_threads: Optional[int] = None
    # Learning curves: evaluate the seen tasks every this many optimizer steps (counted over all
    # tasks) besides after each task; null = after each task only (the paper's protocol). It
    # changes what is measured, never a trained number.
    eval_every: Optional[int] = None


def register_configs() -> None:
    """Stores the top-level schema in Hydra's ConfigStore and registers the built-in components
    (each stores its own node, ``<group>/<name>``, when it is registered)."""
    import cl_sweep.components.activations  # noqa: F401
    import cl_sweep.components.benchmarks  # noqa: F401
    import cl_sweep.models  # noqa: F401
    import cl_sweep.components.optimizers  # noqa: F401
    import cl_sweep.components.strategies  # noqa: F401
    import cl_sweep.tracking.loggers  # noqa: F401  (imports no tracker package)

    ConfigStore.instance().store(name="config_schema", node=Config)


register_configs()


# --- value checks -------------------------------------------------------------------------------
def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(
        f"invalid configuration: {key}={value!r} is not allowed; {allowed}. "
        f"Fix the override (or the config file) and run again: nothing was trained."
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _component(group: str, option: str):
    from cl_sweep.components.registry import ACTIVATIONS, BENCHMARKS, LOGGERS, MODELS, OPTIMIZERS, STRATEGIES

    registry = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "model": MODELS, "strategy": STRATEGIES,
                "benchmark": BENCHMARKS, "logger": LOGGERS}.get(group)
    return None if registry is None else registry.get(option)


def schema_keys(group: str, option: str) -> list[str] | None:
    """The keys a group option's node may hold (its schema's fields), or None for an unknown option."""
    component = _component(group, option)
    return None if component is None else ["name", *component.keys]


def _refuse_key(where: str, key: str, value: Any, allowed: list[str], what: str) -> None:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {where}{close[0]}?" if close else ""
    shown = ", ".join(allowed) if allowed else "none"
    raise ConfigError(
        f"invalid configuration: {where}{key}={value!r} is not allowed; {what} has no key {key!r} "
        f"(its keys: {shown}).{hint} Every key, however it is given (key=, +key=, ++key=, a config file), must be one of "
        f"these too. Fix the override (or the config file) and run again: nothing was trained."
    )


def check_keys(cfg: DictConfig | dict) -> None:
    """Refuses any key a component does not have, however it got there (``+key=``, ``++key=``, a
    config file): Hydra's struct mode stops a misspelt key only when it is given without ``+``."""
    top = [f.name for f in dataclasses.fields(Config)]
    for key in cfg:
        if key not in top and key != "hydra":  # a sweep's job config still carries Hydra's own node
            _refuse_key("", str(key), cfg[key], top, "the top-level config")
    early = [f.name for f in dataclasses.fields(EarlyStopConfig)]
    for key in cfg["early_stop"]:
        if key not in early:
            _refuse_key("early_stop.", str(key), cfg["early_stop"][key], early, "early_stop")
    for group, node in _group_nodes(cfg):
        option = node.get("name")
        kind = group.split(".")[0]
        allowed = schema_keys(kind, option)
        if allowed is None:
            if kind == "logger":  # a logger is looked up by name when it starts: an unknown one is refused here
                from cl_sweep.components.registry import LOGGERS

                _fail(f"{group}", option, f"a logger must be one of {', '.join([*LOGGERS, 'many'])}")
            continue  # an option without a schema here (a test's own config): nothing to compare
        for key in node:
            if key not in allowed:
                _refuse_key(f"{group}.", str(key), node[key], allowed, f"{group}={option}" if group == kind else group)


def _logger_nodes(logger: Any) -> list[tuple[str, Any]]:
    """(where, node) of each tracker a ``logger`` node configures: itself, or ``many``'s chosen ones."""
    if logger is None or logger.get("name") != "many":
        return [] if logger is None else [("logger", logger)]
    from cl_sweep.components.registry import LOGGERS

    allowed = [n for n in LOGGERS if n != "none"]
    fixed = ["name", "loggers", "on_error", *allowed]
    for key in logger:
        if key not in fixed:
            _refuse_key("logger.", str(key), logger[key], fixed, "logger=many")
    chosen = logger.get("loggers")
    if not (hasattr(chosen, "__iter__") and not isinstance(chosen, str)) or not all(n in allowed for n in chosen) \
            or len(set(chosen)) != len(list(chosen)):
        _fail("logger.loggers", chosen if not hasattr(chosen, "_is_missing") else list(chosen),
              f"it must be a list of distinct loggers, each one of {', '.join(allowed)} (e.g. logger.loggers=[csv,mlflow])")
    return [(f"logger.{n}", {"name": n, "on_error": logger.get("on_error", "fail"), **dict(logger.get(n) or {})})
            for n in chosen]


def _group_nodes(cfg: DictConfig | dict) -> list[tuple[str, Any]]:
    """(where, node) of every component node of the config (the chosen loggers of ``logger=many`` each)."""
    out = [(g, cfg.get(g)) for g in ("activation", "optimizer", "benchmark", "model", "strategy") if cfg.get(g) is not None]
    return out + _logger_nodes(cfg.get("logger"))


def validate(cfg: DictConfig | dict) -> None:
    """Checks every key and value range the engine relies on; raises `ConfigError` naming key, value, and what is allowed.

    Imports the config's ``plugins`` first (idempotent), so their components are known in any process.
    """
    from cl_sweep.components.plugins import load_plugins

    load_plugins(cfg.get("plugins"))
    check_keys(cfg)
    act, opt, bench, model = cfg["activation"], cfg["optimizer"], cfg["benchmark"], cfg["model"]

    # model first (an activation's checks may refer to model.hidden_size), then activation and
    # optimizer: each component's checks, declared beside its function
    strat = cfg.get("strategy") or {"name": "none"}
    loggers = _logger_nodes(cfg.get("logger"))
    for group, node in (("benchmark", bench), ("model", model), ("activation", act), ("optimizer", opt), ("strategy", strat),
                        *loggers):
        component = _component(group.split(".")[0], node.get("name"))
        if component is not None:
            for key, value, allowed in component.check(node, cfg):
                _fail(f"{group}.{key}", value, allowed)
    _check_model_builds(model, bench)

    # run
    if not (isinstance(cfg["n_seeds"], int) and cfg["n_seeds"] >= 1):
        _fail("n_seeds", cfg["n_seeds"], "it must be a positive integer")
    if not (isinstance(cfg["seed"], int) and cfg["seed"] >= 0):
        _fail("seed", cfg["seed"], "it must be an integer >= 0")
    tag = cfg.get("tag")
    if tag is not None and not (isinstance(tag, str) and tag.strip() and tag == tag.strip() and "," not in tag):
        _fail("tag", tag, "it must be null or a non-empty label without commas or surrounding spaces, e.g. tag=wide_lr")
    threads = cfg.get("cpu_threads")
    if threads is not None and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        _fail("cpu_threads", threads, "it must be null (follow the launcher) or a positive integer (threads per job)")
    every = cfg.get("eval_every")
    if every is not None and not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
        _fail("eval_every", every, "it must be null (evaluate after each task only) or a positive number of optimizer "
              "steps, e.g. eval_every=100")
    es = cfg["early_stop"]
    if not (isinstance(es["after_seeds"], int) and es["after_seeds"] >= 1):
        _fail("early_stop.after_seeds", es["after_seeds"], "it must be a positive integer")
    if not (_is_number(es["threshold"]) and 0.0 <= es["threshold"] <= 1.0):
        _fail("early_stop.threshold", es["threshold"], "it must be an accuracy in [0, 1]")


def _check_model_builds(model: Any, bench: Any) -> None:
    """A registered model function returns something the engine can train (checked before any data loads)."""
    from cl_sweep.models import build

    component = _component("model", model.get("name"))
    if component is None or "rngs" in component.injected:  # an nnx module is built (abstractly) with the program
        return
    from omegaconf import OmegaConf

    hp = {k: OmegaConf.to_container(v, resolve=True) if hasattr(v, "_is_missing") else v
          for k, v in ((k, model[k]) for k in component.keys)}
    hp = {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}  # as the engine passes them
    try:
        build(component, hp, input_size=784, num_classes=10, epochs_per_task=bench.get("epochs_per_task", 1))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid configuration: model={component.name} cannot be built: {e}. Nothing was trained.") from None


def validate_tfds(bench: Any) -> None:
    """benchmark=split_tfds: the TFDS data set exists here, is image classification, can be read or
    prepared, and has enough classes for the task split; raises `ConfigError` otherwise."""
    from cl_sweep.data.tfds import TFDSUnavailableError, tfds_num_classes

    key, name, data_dir = "benchmark.tfds_name", bench["tfds_name"], bench.get("tfds_data_dir")
    value = name
    if not (isinstance(name, str) and name.strip()):
        _fail(key, name, "benchmark=split_tfds needs the name of a TFDS image-classification data set, "
              "e.g. benchmark.tfds_name=kmnist (or mnist, fashion_mnist, emnist/letters, cifar10)")
    if data_dir is not None and not (isinstance(data_dir, str) and data_dir.strip()):
        _fail("benchmark.tfds_data_dir", data_dir,
              "it must be null (TFDS's default: $TFDS_DATA_DIR, else ~/tensorflow_datasets) or a folder")
    try:
        num_classes = tfds_num_classes(name, data_dir)
    except TFDSUnavailableError as e:
        if e.config_error:
            _fail(key, value, e.reason)
        raise ConfigError(f"cannot use {key}={value!r}: {e.reason}. Nothing was trained.") from None
    tasks, per_task = bench["num_tasks"], bench["classes_per_task"]
    if tasks * per_task > num_classes:
        raise ConfigError(
            f"invalid configuration: benchmark.num_tasks={tasks} x benchmark.classes_per_task={per_task} "
            f"= {tasks * per_task} classes is not allowed; TFDS data set {name!r} has {num_classes} classes "
            f"(labels 0..{num_classes - 1}), so num_tasks * classes_per_task must be at most {num_classes}. "
            f"Fix the override (or the config file) and run again: nothing was trained."
        )
