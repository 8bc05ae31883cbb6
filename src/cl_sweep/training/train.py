"""`train_and_evaluate(cfg) -> result`: one job (one grid point, all its seeds) from a composed config.

Knows configs but not Hydra, so notebooks and scripts call it with a plain dict or a DictConfig.
"""

from __future__ import annotations

import dataclasses
from collections import deque
import datetime as _dt
import math
import resource
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cl_sweep import __version__
from cl_sweep.analysis import metrics
from cl_sweep.components.activations import get_activation
from cl_sweep.config import validate
from cl_sweep.progress import task_bars
from cl_sweep.training import compile_cache
from cl_sweep.training.engine import (
    DeviceData, EvalPoint, Member, Structure, TaskEnd, default_max_population, fast_paths, model_of, padded_population,
    to_device, train_population,
)
from cl_sweep.components.optimizers import get_optimizer
from cl_sweep.components.strategies import get_strategy
from cl_sweep.results import SCHEMA_VERSION, source_revision
from cl_sweep.data.tasks import TaskSplit, limit_test

_DEVICE_DATA: dict[tuple[str, str | None], tuple[DeviceData, Any]] = {}


def _plain(cfg: DictConfig | Mapping) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def device_dataset(name: Any, data_dir: str | None, progress: bool = True, key: Any = None):
    """Loads a dataset once per process and keeps it on the device (uint8). ``name`` is a data set
    name (`cl_sweep.data.datasets.load_dataset`) or a benchmark's own loader ``(data_dir, progress) -> Dataset``,
    cached under ``key`` (the benchmark's config node: a loader may be a new closure per call)."""
    from cl_sweep.data.datasets import load_dataset  # deferred: keeps `import cl_sweep.training.train` light

    key = (name if key is None else key, data_dir)
    if key not in _DEVICE_DATA:
        dataset = name(data_dir, progress) if callable(name) else load_dataset(name, data_dir, progress=progress)
        _DEVICE_DATA[key] = (to_device(dataset), dataset)
    return _DEVICE_DATA[key]


def model_name(cfg: Mapping) -> str:
    return cfg["model"].get("name", "mlp")


def _model(cfg: Mapping):
    from cl_sweep.models import get_model

    return get_model(model_name(cfg))


def activation_of(cfg: Mapping) -> str:
    """The result's ``activation``: the activation group's, unless the model brings its own
    (its registration's ``activation``, e.g. SDMLP's ``sdm_topk``; the group is then unused)."""
    return _model(cfg).meta.get("activation", cfg["activation"]["name"])


def optimizer_of(cfg: Mapping) -> str:
    """The result's ``optimizer``: the optimizer group's, unless the model has its own learning rule."""
    return _model(cfg).meta.get("optimizer", cfg["optimizer"]["name"])


def benchmark_of(cfg: Mapping) -> str:
    """The result's ``benchmark``: the option's name, or the name its `Benchmark` gives (split_tfds
    adds the data set: ``split_tfds:kmnist``), so tables never pool two data sets."""
    from cl_sweep.components.benchmarks import benchmark_of as build

    return build(cfg["benchmark"]).name or cfg["benchmark"]["name"]


def structure_of(cfg: Mapping) -> Structure:
    """The static part of a config: what decides the compiled program."""
    model = _model(cfg)
    own_activation = "activation" in model.meta
    act = get_activation("relu" if own_activation else cfg["activation"]["name"])  # relu: a placeholder, unused
    opt = get_optimizer(cfg["optimizer"]["name"])
    strat = get_strategy(_strategy(cfg)["name"])
    model_static = tuple((k, cfg["model"][k]) for k in model.keys)
    if "epochs_per_task" in model.injected:  # e.g. SDMLP's GABA switch length follows the epochs
        model_static += (("epochs_per_task", cfg["benchmark"]["epochs_per_task"]),)
    return Structure(
        model=model.name,
        model_static=model_static,
        activation=act.name,
        optimizer=opt.name,
        activation_static=tuple((k, cfg["activation"][k]) for k in act.static),
        optimizer_static=tuple((k, cfg["optimizer"][k]) for k in opt.static),
        strategy=strat.name,
        strategy_static=tuple((k, _strategy(cfg)[k]) for k in strat.static),
    )


def _strategy(cfg: Mapping) -> Mapping:
    return cfg.get("strategy") or {"name": "none"}


def members_of(cfg: Mapping, seeds: Sequence[int]) -> list[Member]:
    """One member per seed, all with the config's traced hyperparameters."""
    act = get_activation(structure_of(cfg).activation)
    opt = get_optimizer(cfg["optimizer"]["name"])
    act_hp = {k: cfg["activation"][k] for k in act.traced}
    opt_hp = {k: cfg["optimizer"][k] for k in opt.hyperparameters}
    strat = get_strategy(_strategy(cfg)["name"])
    s_hp = {k: float(_strategy(cfg)[k]) for k in strat.traced}
    return [Member(seed, act_hp, opt_hp, s_hp) for seed in seeds]


def hyperparameters_of(cfg: Mapping) -> dict[str, Any]:
    """The flat ``group.key -> value`` dict that identifies a grid point in results and tables."""
    hp = {}
    groups = [g for g in ("activation", "optimizer") if g not in _model(cfg).meta]
    for group in groups:
        for k, v in cfg[group].items():
            if k != "name":
                hp[f"{group}.{k}"] = v
    if model_name(cfg) != "mlp":  # plain runs keep the keys they always had
        hp.update({f"model.{k}": v for k, v in cfg["model"].items()})
    for k in ("hidden_size", "weight_norm", "update_clip"):
        if k in cfg["model"]:
            hp[f"model.{k}"] = cfg["model"][k]
    for k in ("batch_size", "epochs_per_task", "limit_per_task"):
        hp[f"benchmark.{k}"] = cfg["benchmark"][k]
    if cfg["benchmark"].get("validation_fraction", 0):  # without one, runs keep the keys they always had
        hp["benchmark.validation_fraction"] = cfg["benchmark"]["validation_fraction"]
    if cfg["benchmark"].get("test_limit_per_task") is not None:  # likewise: scored on part of the test set
        hp["benchmark.test_limit_per_task"] = cfg["benchmark"]["test_limit_per_task"]
    strat = _strategy(cfg)
    if strat["name"] != "none":  # plain runs keep the keys they always had
        hp["strategy.name"] = strat["name"]
        hp.update({f"strategy.{k}": v for k, v in strat.items() if k != "name"})
    return hp


def split_of(cfg: Mapping, dataset) -> TaskSplit:
    """The benchmark's tasks of ``dataset`` (its registered `Benchmark`'s split)."""
    from cl_sweep.components.benchmarks import benchmark_of as build

    return build(cfg["benchmark"]).split(dataset)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std())  # population std (ddof=0), as the paper


def population_key(cfg: Mapping) -> tuple:
    """Jobs with equal keys can train as one population: same program, data, schedule, early-stop rule
    and evaluation points (``eval_every``)."""
    bench, es = cfg["benchmark"], cfg["early_stop"]
    return (
        structure_of(cfg),
        _benchmark_key(bench), cfg.get("data_dir"), es["enabled"], es["after_seeds"], es["threshold"],
        cfg.get("eval_every"),
    )


def _benchmark_key(bench: Mapping) -> tuple:
    """The benchmark node as a hashable key: the same option and keys give the same data and tasks."""
    return tuple(sorted((k, _hashable(v)) for k, v in bench.items()))


def _hashable(value: Any) -> Any:
    return tuple(map(_hashable, value)) if isinstance(value, (list, tuple)) else value


def train_and_evaluate(cfg: DictConfig | Mapping, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains all seeds of one config together and returns the schema-1 result dict (not yet written).

    With ``early_stop.enabled``, the first ``after_seeds`` seeds train first; if their mean final
    accuracy (validation accuracy when the benchmark holds examples out) is below ``threshold`` the rest
    are skipped and ``early_stopped`` is true.
    """
    return train_jobs([cfg], [overrides])[0]


def _population_setup(cfg: Mapping, progress: bool) -> tuple[DeviceData, TaskSplit, Structure]:
    """The data on the device, the tasks and the compiled program's structure of a population's jobs."""
    from cl_sweep.components.benchmarks import benchmark_of as build

    source = build(cfg["benchmark"]).dataset
    key = ("benchmark", _benchmark_key(cfg["benchmark"])) if callable(source) else None
    device_data, dataset = device_dataset(source, cfg.get("data_dir"), progress, key=key)
    # The model's input and output sizes follow the data set (784 → … → 10 for MNIST).
    structure = dataclasses.replace(
        structure_of(cfg), input_size=int(dataset.train_images.shape[1]), num_classes=int(dataset.num_classes)
    )
    split, keep = limit_test(split_of(cfg, dataset), cfg["benchmark"].get("test_limit_per_task"))
    if keep is not None:  # the kept test examples only: a tiny job no longer spends most of its time evaluating
        device_data = dataclasses.replace(device_data, test_images=device_data.test_images[keep],
                                          test_labels=device_data.test_labels[keep])
    return device_data, split, structure


def train_jobs(
    cfgs: Sequence[DictConfig | Mapping],
    overrides: Sequence[Sequence[str]],
    *,
    max_population: int | None = None,
    desc: str = "",
    compile_only: bool = False,
    listeners: Sequence[Callable[[int, TaskEnd], None]] = (),
    on_result: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Trains several jobs (grid points) of one `population_key` as one population; one result per job.

    Every (job, seed) is a member; members are independent under ``vmap``, so each job's numbers
    are those it gets alone (up to float rounding of batched kernels). ``max_population`` caps
    the members per compiled call (memory, and the CPU's sweet spot); None means
    `cl_sweep.training.engine.default_max_population` (2 on CPU).

    The calls are filled across jobs: members wait in one queue and every call takes the next
    ``max_population`` of them, whichever jobs they belong to, so only the last call of the batch
    can be short. Early stop is per job: a job's first ``after_seeds`` seeds are its phase 1;
    once all of them have trained, the rule reads their mean final accuracy (on the held-out
    validation examples when the benchmark has them) and either queues the job's remaining
    seeds (ahead of other jobs' phase-1 seeds, so few jobs are in flight at a time) or stops it.
    A job is done when its last member has trained: its result goes to ``on_result(job, result)``
    at once (the population launcher writes it then, so a killed sweep loses only the jobs in
    flight), and is returned with the others at the end. ``wall_time_s`` of a job is its share
    of the calls that trained its members (each call's time split evenly among its members, the
    set-up counted in the first call).

    ``compile_only`` compiles the program of the first call and returns [] (training nothing):
    compilation, not training, is most of a big sweep's time on a GPU, so the population launcher
    does this for every structure in parallel threads before training them one after the other.
    FlyModel's trainer compiles as it goes, so there it does nothing.

    ``listeners`` are called after every task of every call as ``listener(job, event)``, once per
    job with members in the call: ``event`` is the engine's `TaskEnd` narrowed to that job's seeds
    (trackers log it per seed; a pruner reads the job's running accuracy). A listener that returns
    True prunes the job at that task boundary: its members in the call stop there (the engine
    drops them from the population), its seeds not yet trained are never trained (neither in a
    later call nor in the early-stop rule's second phase), and its result has
    ``status: "pruned"`` and the ``tasks_trained`` of every seed it trained (see `_result`).

    Compiled programs are kept on disk between processes (`cl_sweep.training.compile_cache`).
    """
    compile_cache.enable()  # before this process compiles anything: JAX decides once whether to use it
    cfgs = [_plain(c) for c in cfgs]
    for c in cfgs:
        validate(c)
    keys = {population_key(c) for c in cfgs}
    if len(keys) != 1:
        raise ValueError(f"jobs of different structures cannot share a population: {sorted(map(str, keys))}")
    start = time.perf_counter()
    common = cfgs[0]
    progress = task_bars(common["progress"])  # null: off inside a sweep
    # the one-line note that a download starts stays on unless progress=false
    device_data, split, structure = _population_setup(common, common["progress"] is not False)
    es = common["early_stop"]
    bench = common["benchmark"]
    seeds = [[c["seed"] + i for i in range(c["n_seeds"])] for c in cfgs]

    # (job, seed) -> final accuracy, accuracy matrix, diverged, active fraction per task, tasks trained,
    # (validation accuracy, validation matrix) or None without a validation set, initial accuracy [T],
    # per-class accuracy [C] or None, mean training loss per task [T], and the curve
    # (step [K], task [K], overall [K], per task [K, T]) or None without eval_every
    outcome: dict[tuple[int, int], tuple] = {}
    pruned: set[int] = set()  # jobs a listener pruned

    cap = max_population or default_max_population()
    total = sum(len(ss) for ss in seeds)  # members if no job stops early
    # The largest call: padding the first call to it (on an accelerator) lets every later call of
    # this population reuse one compiled program.
    expect = min(cap, total)
    phase1 = [first_phase_seeds(c) for c in cfgs]
    # phase-1 members, one group per job in job order; phase-2 members of jobs the rule let go on
    waiting = deque([(j, s) for s in ss[: phase1[j]]] for j, ss in enumerate(seeds))
    second: deque[tuple[int, int]] = deque()
    resume: deque[tuple[int, int]] = deque()  # the rest of a phase-1 group an earlier call split
    left = [set(ss[: phase1[j]]) for j, ss in enumerate(seeds)]  # members of each job not yet trained
    decided = [phase1[j] == len(ss) for j, ss in enumerate(seeds)]  # no phase 2 to decide on
    early_stopped = [False] * len(cfgs)
    share = [0.0] * len(cfgs)  # seconds of the calls that trained each job's members
    results: dict[int, dict[str, Any]] = {}
    paths = fast_paths(structure, split.permutations is not None)
    trained_models = 0
    mark = start

    def call(chunk: list[tuple[int, int]]):
        if len(cfgs) == 1:
            label = f"seeds {chunk[0][1]}-{chunk[-1][1]} " if len(chunk) > 1 else f"seed {chunk[0][1]} "
        else:
            label = f"{desc}models {trained_models + 1}-{trained_models + len(chunk)}/{total} "
        schedule = dict(
            batch_size=bench["batch_size"], epochs_per_task=bench["epochs_per_task"],
            limit_per_task=bench["limit_per_task"], progress=progress, desc=label,
        )
        if common.get("eval_every") and not compile_only:
            schedule["eval_every"] = common["eval_every"]
            if listeners:
                schedule["on_eval"] = _per_job_eval(chunk, listeners, pruned)
        if listeners and not compile_only:
            schedule["on_task_end"] = _per_job(chunk, listeners, pruned)
        trainer = model_of(structure).trainer  # a model with its own rule (FlyModel), same result layout
        if trainer is not None:
            return None if compile_only else trainer([s for _, s in chunk], device_data, split, **schedule)
        members = [members_of(cfgs[j], [s])[0] for j, s in chunk]
        pad_to = padded_population(len(chunk), cap, structure, split.permutations is not None, expect)
        return train_population(structure, members, device_data, split, pad_to=pad_to, compile_only=compile_only,
                                **schedule)

    def finish(j: int) -> None:
        trained = [s for s in seeds[j] if (j, s) in outcome]
        resources = {
            "peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
            "time_per_model_s": round(share[j] / max(1, len(trained)), 3),
        }
        results[j] = _result(cfgs[j], overrides[j], trained, len(seeds[j]), early_stopped[j], outcome, j, share[j],
                             pruned=j in pruned, resources=resources, paths=paths)
        if on_result is not None:
            on_result(j, results[j])

    def next_chunk() -> list[tuple[int, int]]:
        """The next call's members: every call is full while members wait. The rest of a job's
        phase 1 split off by an earlier call goes first (its job's phase 2 waits on it), phase-2
        members next once they fill the call (so few jobs are in flight); a job's phase-1 seeds share
        a call where they fit (a pruner hears a job from its first call), and are split only to fill
        a call that nothing else fills."""
        chunk: list[tuple[int, int]] = []

        def take(queue: deque, n: int) -> None:
            while queue and len(chunk) < n:
                member = queue.popleft()
                if member[0] not in pruned:
                    chunk.append(member)

        take(resume, cap)
        if len(second) >= cap - len(chunk) or not waiting:
            take(second, cap)
        while waiting and len(chunk) < cap:  # whole phase-1 groups that fit
            group = [m for m in waiting[0] if m[0] not in pruned]
            if len(group) > cap - len(chunk) and len(group) <= cap:
                break
            waiting.popleft()
            space = cap - len(chunk)
            chunk += group[:space]
            resume.extend(group[space:])  # a group larger than a call is split anyway
        take(second, cap)
        if waiting and len(chunk) < cap:  # split a group rather than leave the call short
            group = waiting.popleft()
            space = cap - len(chunk)
            chunk += [m for m in group[:space] if m[0] not in pruned]
            resume.extend(group[space:])
        return chunk

    while resume or second or waiting:
        chunk = next_chunk()
        if not chunk:
            break
        res = call(chunk)
        if compile_only:
            return []
        now = time.perf_counter()
        for j, _ in chunk:
            share[j] += (now - mark) / len(chunk)
        mark = now
        trained_models += len(chunk)
        for i, key in enumerate(chunk):
            trained = int(res.tasks_trained[i]) if res.tasks_trained is not None else split.num_tasks
            validation = None
            if res.validation_accuracy is not None:
                validation = (float(res.validation_accuracy[i]), res.validation_matrix[i])
            curve = res.curve
            outcome[key] = (
                float(res.final_accuracy[i]), res.accuracy_matrix[i], bool(res.diverged[i]), res.active_fraction[i],
                trained, validation, res.initial_accuracy[i],
                None if res.class_accuracy is None else res.class_accuracy[i], res.train_loss[i],
                None if curve is None else (curve.step, curve.task, curve.overall[i], curve.per_task[i]),
            )
            left[key[0]].discard(key[1])
        for j in dict.fromkeys(j for j, _ in chunk):  # the call's jobs, in order
            if j in pruned:
                left[j].clear()  # its queued members are dropped as they come up
            if left[j]:
                continue
            if not decided[j] and j not in pruned:
                decided[j] = True
                done = [outcome[(j, s)] for s in seeds[j][: phase1[j]]]
                # With held-out validation examples the rule reads their accuracy, not the test set's: a sweep
                # that selects by validation (benchmark.validation_fraction) never sees test accuracy before it reports.
                ok = [f if v is None else v[0] for f, _, d, _, _, v, *_ in done if not d]
                mean = float(np.mean(ok)) if ok else float("nan")
                if mean >= es["threshold"]:
                    rest = [(j, s) for s in seeds[j][phase1[j] :]]
                    second += rest
                    left[j].update(s for _, s in rest)
                    continue
                early_stopped[j] = True  # NaN (all diverged) also stops
            finish(j)
    assert len(results) == len(cfgs), "every job finishes when its last member has trained"
    return [results[j] for j in range(len(cfgs))]


def _per_job(chunk: Sequence[tuple[int, int]], listeners, pruned: set[int]) -> Callable[[TaskEnd], list[int]]:
    """The engine's per-population `TaskEnd` split into one event per job of ``chunk`` ((job, seed) per member).

    Returns the engine's stop list: the members of the jobs a listener pruned at this task
    (added to ``pruned``). A pruned job is not heard again.
    """
    jobs: dict[int, list[int]] = {}
    for member, (j, _) in enumerate(chunk):
        jobs.setdefault(j, []).append(member)

    def on_task_end(event: TaskEnd) -> list[int]:
        stop: list[int] = []
        for j, members in jobs.items():
            if j in pruned:
                continue
            idx = np.asarray(members)
            part = dataclasses.replace(
                event, seeds=tuple(event.seeds[m] for m in members), accuracy_matrix=event.accuracy_matrix[idx],
                overall_accuracy=event.overall_accuracy[idx], active_fraction=event.active_fraction[idx],
                diverged=event.diverged[idx], stopped=None if event.stopped is None else event.stopped[idx],
                train_loss=None if event.train_loss is None else event.train_loss[idx],
                validation_overall=None if event.validation_overall is None else event.validation_overall[idx],
            )
            verdicts = [listener(j, part) for listener in listeners]  # every listener hears every task
            if any(v is True for v in verdicts) and event.task < event.num_tasks - 1:  # the last task ends it anyway
                pruned.add(j)
                stop += members
        return stop

    return on_task_end


def _per_job_eval(chunk: Sequence[tuple[int, int]], listeners, pruned: set[int]) -> Callable[[EvalPoint], None]:
    """The engine's `EvalPoint` split into one event per job of ``chunk``, for the listeners with an
    ``on_eval(job, event)`` method (trackers); a pruned job is not heard again."""
    jobs: dict[int, list[int]] = {}
    for member, (j, _) in enumerate(chunk):
        jobs.setdefault(j, []).append(member)
    hearing = [listener.on_eval for listener in listeners if hasattr(listener, "on_eval")]

    def on_eval(event: EvalPoint) -> None:
        for j, members in jobs.items():
            if j in pruned:
                continue
            idx = np.asarray(members)
            part = dataclasses.replace(event, seeds=tuple(event.seeds[m] for m in members),
                                       overall_accuracy=event.overall_accuracy[idx], per_task=event.per_task[idx])
            for listen in hearing:
                listen(j, part)

    return on_eval


def jobs_per_batch(cfg: Mapping, cap: int) -> int:
    """Jobs of ``cfg``'s kind the population launcher hands `train_jobs` at once: the fewest whose
    phase-1 members and whose members in all fill every call of ``cap`` models when no job stops
    early (2 five-seed jobs on a CPU's populations of 2; 256 on an accelerator's 256). Within a
    batch the calls are filled across jobs; a batch's last call is the only one that can be short.
    Small batches keep the sharded launchers' cuts (between batches) fine-grained."""
    first, n = max(1, first_phase_seeds(cfg)), max(1, int(cfg["n_seeds"]))
    return math.lcm(cap // math.gcd(cap, first), cap // math.gcd(cap, n))


def first_phase_seeds(cfg: Mapping) -> int:
    """Seeds a job trains before the early-stop rule decides on the rest (all of them without it)."""
    es = cfg["early_stop"]
    return min(cfg["n_seeds"], es["after_seeds"]) if es["enabled"] else cfg["n_seeds"]


def _result(cfg, overrides, trained, n_requested, early_stopped, outcome, j, wall, *, pruned=False,
            resources: Mapping[str, float], paths: Mapping[str, Any]) -> dict[str, Any]:
    """The result dict of one job (schema 3; a pruned job adds the optional ``tasks_trained``, one that
    held examples out the optional validation keys, one with ``eval_every`` the ``curve``).

    A pruned job (a listener stopped it at a task boundary) has ``status: "pruned"``, null final
    accuracies and means (it has no final accuracy: it never finished the last task), its
    matrix rows and active fractions up to the task it stopped after (null later), and
    ``tasks_trained`` per seed. Its ``diverged`` flags are kept as they were.
    """
    import jax
    import jaxlib

    def as_list(m: np.ndarray) -> list:
        return [[None if not math.isfinite(v) else float(v) for v in row] for row in m]

    def values(v: np.ndarray) -> list:
        return [None if not math.isfinite(x) else float(x) for x in v]

    final = [outcome[(j, s)][0] for s in trained]
    matrix = [as_list(outcome[(j, s)][1]) for s in trained]
    diverged = [outcome[(j, s)][2] for s in trained]
    active = [[float(a) if math.isfinite(a) else None for a in outcome[(j, s)][3]] for s in trained]
    final_list = [None if d or pruned else float(a) for a, d in zip(final, diverged)]
    validation = {}  # optional keys: only a job with a validation set has them
    if all(outcome[(j, s)][5] is not None for s in trained):
        held_out = [outcome[(j, s)][5] for s in trained]
        validation = {
            "validation_accuracy": [None if d or pruned or not math.isfinite(v) else float(v)
                                    for (v, _), d in zip(held_out, diverged)],
            "validation_accuracy_matrix": [as_list(m) for _, m in held_out],
        }
    curves = {}  # optional: only a job with eval_every has it
    if trained and all(outcome[(j, s)][9] is not None for s in trained):
        curves = {"curve": [
            {"step": [int(x) for x in step], "task": [int(x) for x in task], "accuracy": values(acc),
             "task_accuracy": as_list(per_task)}
            for step, task, acc, per_task in (outcome[(j, s)][9] for s in trained)
        ]}
    initial = [values(outcome[(j, s)][6]) for s in trained]
    classes = [None if d or pruned or outcome[(j, s)][7] is None else values(outcome[(j, s)][7])
               for s, d in zip(trained, diverged)]
    status = "pruned" if pruned else "diverged" if any(diverged) else "ok"
    if status == "ok":
        mean, std = _mean_std(final_list)
    else:
        mean = std = None
    return {
        "schema": SCHEMA_VERSION,
        "status": status,
        "benchmark": benchmark_of(cfg),
        "activation": activation_of(cfg),
        "optimizer": optimizer_of(cfg),
        "model": model_name(cfg),
        "hyperparameters": hyperparameters_of(cfg),
        "config": cfg,
        "overrides": list(overrides),
        "seeds": trained,
        "n_seeds_requested": n_requested,
        "early_stopped": early_stopped,
        "diverged": diverged,
        "final_accuracy": final_list,
        "final_accuracy_mean": mean,
        "final_accuracy_std": std,
        "accuracy_matrix": matrix,
        "average_accuracy": [metrics.average_accuracy(m) for m in matrix],
        "forgetting": [metrics.forgetting(m) for m in matrix],
        "backward_transfer": [metrics.backward_transfer(m) for m in matrix],
        "active_fraction": active,
        "initial_accuracy": initial,
        "forward_transfer": [metrics.forward_transfer(m, b) for m, b in zip(matrix, initial)],
        "learning_accuracy": [metrics.learning_accuracy(m) for m in matrix],
        "class_accuracy": classes,
        "train_loss": [values(outcome[(j, s)][8]) for s in trained],
        **validation,
        **curves,
        "wall_time_s": round(wall, 3),
        **resources,
        "versions": {"cl_sweep": __version__, "git": source_revision(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "fast_paths": dict(paths)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **({"tasks_trained": [outcome[(j, s)][4] for s in trained]} if pruned else {}),
    }


def objective(result: Mapping[str, Any], *, trained: bool = True) -> float:
    """The float a sweeper optimises: the job's selection accuracy, NaN for a diverged job.

    That is ``validation_accuracy_mean`` when the benchmark held examples out
    (``benchmark.validation_fraction`` > 0: a sweep then selects on validation and never on test,
    as the tables do), else ``final_accuracy_mean``. It carries the job's metrics by name
    (:class:`cl_sweep.results.Objective`) for ``hydra.sweeper.objectives`` (naming
    ``final_accuracy_mean`` there optimises test accuracy regardless), and how many models it
    trained (none when ``trained`` is false: its result was already complete)."""
    from cl_sweep.results import Objective, metrics

    named = metrics(dict(result))
    mean = named["validation_accuracy_mean"] if "validation_accuracy" in result else result["final_accuracy_mean"]
    value = float("nan") if mean is None or not math.isfinite(mean) else float(mean)
    return Objective(value, named, pruned=result["status"] == "pruned",
                     models=len(result["seeds"]) if trained else 0)
