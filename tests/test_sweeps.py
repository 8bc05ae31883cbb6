"""Real `--multirun` sweeps into a temporary folder: grid presets, resume after a kill, aggregation."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cl_sweep.results import find_result_files, read_result
from conftest import REPO, TEST_SLICE, run_cli

TINY = ["benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=2", "progress=false"]


def dry_run_count(*args: str) -> int:
    proc = run_cli("--multirun", *args, "hydra.sweeper.dry_run=true", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith("jobs (dry run: nothing launched)")
    return int(last.split()[0])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["activation=relu", "optimizer=adagrad"], 3),
        (["activation=hard_ash", "optimizer=rmsprop"], 6 * 25),
        (["activation=hard_ash", "optimizer=adam"], 6 * 24),
        (["activation=topk_subtract", "optimizer=sgdm"], 5 * 12),
        (["activation=lwta", "optimizer=sgd"], 3 * 3),
        (["activation=glob(*)", "optimizer=glob(*)"], 1943),
        (["activation=topk_subtract", "activation.k=64,96", "seed=0,5"], 2 * 2 * 3),  # command line wins over the grid
    ],
)
def test_a6_preset_job_counts(args, expected):
    assert dry_run_count("+sweep=a6", *args) == expected


def test_appendix_presets_job_counts():
    assert dry_run_count("+sweep=a8", "activation=hard_ash", "optimizer=adam") == 6 * 24 * 2  # A.8: bias correction on/off
    assert dry_run_count("+sweep=a9", "activation=hard_ash", "optimizer=sgd_exp_decay") == 6 * 6  # A.9: starting lr
    fixed = ["optimizer.learning_rate=2e-4", "activation.z_k=2.3", "activation.alpha=3.0"]
    assert dry_run_count("+sweep=strategies", "activation=hard_ash", "optimizer=adagrad", "strategy=none,ewc,online_ewc,mas", *fixed) == 1 + 5 + 10 + 5


def test_comparison_and_fashion_presets_job_counts():
    """The counts their first comments promise (Table 1's comparison rows; Split Fashion-MNIST)."""
    assert dry_run_count("+sweep=sdmlp", "strategy=none,ewc") == 5 * (1 + 4)
    assert dry_run_count("+sweep=ewc_baselines", "strategy=none,ewc,online_ewc,mas") == 3 * (1 + 5 + 10 + 5)
    fixed = ["activation.alpha=3.0", "activation.z_k=2.3", "optimizer.learning_rate=2e-4"]
    assert dry_run_count("+sweep=ewc_baselines", "activation=hard_ash", "optimizer=adagrad", "strategy=ewc", *fixed) == 5
    assert dry_run_count("+sweep=flymodel") == 3 * 3
    assert dry_run_count("+sweep=fashion", "activation=glob(*,exclude=elephant)", "optimizer=glob(*,exclude=sgd_exp_decay)") == 9 * 5


def test_a6_grid_values_are_the_protocol_values():
    proc = run_cli("--multirun", "+sweep=a6", "activation=hard_ash", "optimizer=rmsprop", "hydra.sweeper.dry_run=true")
    jobs = proc.stdout.strip().splitlines()[:-1]
    values = lambda key: sorted({float(a.split("=")[1]) for j in jobs for a in j.split() if a.startswith(key + "=")})
    assert values("activation.alpha") == [3.0, 4.0]
    assert values("activation.z_k") == [2.2, 2.3, 2.4]
    assert values("optimizer.decay") == [0.998, 0.999, 0.9991, 0.9992, 0.9993]
    assert values("optimizer.learning_rate") == [4e-6, 5e-6, 5.5e-6, 6e-6, 8e-6]


def test_invalid_override_for_the_grid_fails_before_any_job(tmp_path):
    proc = run_cli(
        "--multirun", "+sweep=a6", "activation=topk_subtract", "activation.k=0,64", *TINY,
        f"hydra.sweep.dir={tmp_path}", timeout=300,
    )
    assert proc.returncode != 0
    assert "activation.k=0" in proc.stderr and "no job of this sweep was started" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(find_result_files(tmp_path)) == []


@pytest.mark.slow
def test_real_grid_multirun_writes_one_result_per_job_and_aggregates(tmp_path):
    proc = run_cli(
        "--multirun", "+sweep=a6", "activation=relu,hard_sigmoid", "optimizer=adagrad", *TINY,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(find_result_files(tmp_path))
    assert len(files) == 6
    results = [read_result(f) for f in files]
    assert {r["activation"] for r in results} == {"relu", "hard_sigmoid"}
    assert sorted(r["hyperparameters"]["optimizer.learning_rate"] for r in results) == [1e-4, 1e-4, 2e-4, 2e-4, 3e-4, 3e-4]
    # each job is re-runnable from the overrides it records
    assert all("+sweep=a6" in r["overrides"] and "optimizer=adagrad" in r["overrides"] for r in results)
    # tiny slices land far below 65%: the early-stop rule of the A.6 preset keeps 2 of 2 seeds here
    assert all(r["seeds"] == [0, 1] for r in results)

    tables = tmp_path / "tables"  # every benchmark in its own folder: split_mnist here
    agg = subprocess.run(
        [sys.executable, "-m", "cl_sweep.analysis.tables", str(tmp_path), "--out", str(tables), "--no-plots"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert agg.returncode == 0, agg.stderr
    assert "ReLU" in agg.stdout and "Hard Sigmoid" in agg.stdout
    assert (tables / "split_mnist" / "table2.md").is_file() and (tables / "split_mnist" / "table2.csv").is_file() and (tables / "split_mnist" / "table2.tex").is_file()
    best_relu = max(r["final_accuracy_mean"] for r in results if r["activation"] == "relu")
    assert f"{100 * best_relu:.1f}" in (tables / "split_mnist" / "table2.md").read_text()


@pytest.mark.slow
def test_killed_grid_resumes_without_recomputing_finished_jobs(tmp_path):
    args = [
        sys.executable, "-m", "cl_sweep", "--multirun", "+sweep=a6", "activation=relu", "optimizer=sgdm",
        *TINY, f"hydra.sweep.dir={tmp_path}",
    ]  # 12 jobs
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 300
    while len(list(find_result_files(tmp_path))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep, possibly mid-job
    proc.wait()
    finished = {f: f.read_text() for f in find_result_files(tmp_path)}
    assert 3 <= len(finished) < 12
    for f in finished:
        read_result(f)  # every file left behind is complete: writes are atomic

    again = run_cli(*args[3:], timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    files = list(find_result_files(tmp_path))
    assert len(files) == 12
    for f, text in finished.items():
        assert f.read_text() == text  # not recomputed
    assert f"{len(finished)} of 12 jobs already complete, not re-run" in again.stdout + again.stderr
    assert "sweep done: 12/12 jobs" in again.stderr and f"; {len(finished)} already complete" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["a6", "a6_log"])
def test_optuna_preset_resumes_to_n_trials_on_the_real_trainer(tmp_path, preset):
    import optuna

    storage = f"sqlite:///{tmp_path}/study.db"
    base = [
        "--multirun", "hydra/sweeper=optuna", f"+search={preset}", "activation=hard_ash", "optimizer=rmsprop", *TINY,
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=t", "hydra.sweeper.sampler.seed=1",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    first = run_cli(*base, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep done: 3/3 trials" in first.stderr
    second = run_cli(*base, "hydra.sweeper.n_trials=5")
    assert second.returncode == 0, second.stderr[-3000:]
    # the sweep's line counts towards n_trials, the 3 trials of the first run as done from the start
    assert re.search(r"sweep done: 5/5 trials in \S+ \([0-9.]+ models/s\): 2 ok, 0 diverged, 0 failed; 3 already complete", second.stderr)
    study = optuna.load_study(study_name="t", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 5  # resumed to 5, not 3 + 5
    params = complete[0].params
    assert set(params) == {"activation.alpha", "activation.z_k", "optimizer.decay", "optimizer.learning_rate"}
    if preset == "a6":
        assert all(t.params["optimizer.decay"] in (0.998, 0.999, 0.9991, 0.9992, 0.9993) for t in complete)
    else:
        assert all(2e-6 <= t.params["optimizer.learning_rate"] <= 2e-5 for t in complete)
    # every trial's value is the final_accuracy_mean of the result.json its job wrote
    values = sorted(round(read_result(f)["final_accuracy_mean"], 9) for f in find_result_files(tmp_path / "sweep"))
    assert sorted(round(t.value, 9) for t in complete) == values


@pytest.mark.slow
def test_population_launcher_matches_jobs_run_alone(tmp_path):
    """The same grid through the population launcher and the basic one: same files, same numbers."""
    # progress left at its default: inside a sweep the per-task bars are off, the sweep's line is on
    args = ["--multirun", "+sweep=a6", "activation=topk_subtract", "optimizer=sgd", "activation.k=32,256",
            *[a for a in TINY if a != "progress=false"]]
    pop = run_cli(*args, f"hydra.sweep.dir={tmp_path}/pop")  # the preset's default launcher
    assert pop.returncode == 0, pop.stderr[-3000:]
    assert "as populations of up to" in pop.stdout + pop.stderr
    alone = run_cli(*args, "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path}/alone")
    assert alone.returncode == 0, alone.stderr[-3000:]
    for proc in (pop, alone):  # the basic launcher's jobs run in the sweeper's process, each counted as it ends
        assert re.search(r"sweep done: 6/6 jobs in \S+ \([0-9.]+ models/s\): 6 ok, 0 diverged, 0 failed; 0 already complete", proc.stderr)
        assert "task 1/5" not in proc.stderr and "test accuracy" not in proc.stderr
    # ... as it ends, not when the launcher returns the batch: the first line came before the last job
    elapsed = [int(m) * 60 + int(s) for m, s in re.findall(r"^sweep(?::| done:) \d/6 jobs.* in (\d+):(\d\d)", alone.stderr, re.M)]
    assert len(elapsed) == 6 and elapsed == sorted(elapsed) and elapsed[0] < elapsed[-1], alone.stderr

    def by_point(root):
        return {tuple(sorted(r["overrides"])): r for r in map(read_result, find_result_files(root))}

    a, b = by_point(tmp_path / "pop"), by_point(tmp_path / "alone")
    assert len(a) == 6 and a.keys() == b.keys()
    for key in a:
        ra, rb = a[key], b[key]
        for field in ("schema", "status", "seeds", "hyperparameters", "config", "overrides", "early_stopped", "diverged"):
            assert ra[field] == rb[field], field
        # bit for bit on this CPU: members are independent under vmap, and the per-task accuracy no
        # longer depends on the population size (engine.task_accuracies). A GPU may pick other GEMM
        # algorithms for other batch sizes; this test runs on the CPU.
        for field in ("final_accuracy", "final_accuracy_mean", "final_accuracy_std", "accuracy_matrix"):
            assert ra[field] == rb[field], field


@pytest.mark.slow
def test_sweep_line_counts_a_diverged_job_and_the_per_task_bars_stay_quiet(tmp_path):
    """A real two-job grid, one learning rate diverging, trained as one population; stderr is a pipe,
    so the sweep's line is plain lines (no carriage returns), and no per-task bar is drawn."""
    proc = run_cli(
        "--multirun", "hydra/sweeper=grid", "hydra/launcher=population", "activation=relu", "optimizer=sgd",
        "optimizer.learning_rate=0.01,1e38", "model.update_clip=null", "benchmark.limit_per_task=64", "n_seeds=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(read_result(f)["status"] for f in find_result_files(tmp_path)) == ["diverged", "ok"]
    assert re.search(r"^sweep done: 2/2 jobs in \S+ \([0-9.]+ models/s\): 1 ok, 1 diverged, 0 failed; 0 already complete$",
                     proc.stderr, re.M), proc.stderr
    assert "\r" not in proc.stderr and "task 1/5" not in proc.stderr and "test accuracy" not in proc.stderr
    assert "diverged (non-finite loss) in task" in proc.stderr  # a divergence is still reported when it happens


@pytest.mark.slow
def test_a7_preset_trains_on_iid_mnist(tmp_path):
    proc = run_cli("--multirun", "+sweep=a7", "activation=relu", "optimizer=sgd", *TINY, f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [read_result(f) for f in find_result_files(tmp_path)]
    assert len(results) == 3
    assert all(r["benchmark"] == "iid_mnist" and len(r["accuracy_matrix"][0]) == 1 for r in results)  # one task


def test_fast_job_composition_equals_hydras(tmp_path):
    """The population launcher's SweepComposer reuses one composed config per group-override list;
    every job's config, `hydra` node included, must be exactly what Hydra's own load_sweep_config gives."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    import cl_sweep.config  # noqa: F401  (registers the structured schemas, as the entry point does)
    from hydra_plugins.cl_sweep_population_launcher._compose import SweepComposer

    a6 = ["+sweep=a6", "progress=false"]
    jobs = [
        [*a6, "activation=hard_ash", "optimizer=rmsprop", "activation.alpha=3.0", "activation.z_k=2.2", "activation.beta=2.0",
         "optimizer.decay=0.999", "optimizer.learning_rate=5e-06"],
        [*a6, "activation=hard_ash", "optimizer=rmsprop", "activation.alpha=4.0", "activation.z_k=2.4", "activation.beta=2.0",
         "optimizer.decay=0.9993", "optimizer.learning_rate=8e-06"],
        [*a6, "activation=topk_subtract", "optimizer=adam", "activation.k=64", "optimizer.b1=0.9", "optimizer.b2=0.999",
         "optimizer.learning_rate=1e-05"],
        [*a6, "activation=topk_subtract", "optimizer=adam", "activation.k=256", "optimizer.b1=0.99", "optimizer.b2=0.9995",
         "optimizer.learning_rate=8e-06"],
        [*a6, "activation=relu", "optimizer=sgd", "optimizer.learning_rate=0.0003"],
        [*a6, "activation=relu", "optimizer=sgd", "optimizer.learning_rate=0.0005", "seed=5"],  # a new leaf key
        ["+sweep=strategies", "activation=hard_ash", "optimizer=adagrad", "strategy=ewc", "strategy.lambda=10.0"],
        ["+sweep=strategies", "activation=hard_ash", "optimizer=adagrad", "strategy=ewc", "strategy.lambda=1000.0"],
    ]
    conf = str(REPO / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3", job_name="cl_sweep"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration(
            "config", ["hydra/sweeper=grid", "hydra/launcher=population", f"hydra.sweep.dir={tmp_path}"], RunMode.MULTIRUN
        )
        composer = SweepComposer(loader, master)
        for job in jobs:
            fast, hydra = composer.compose(job), loader.load_sweep_config(master, job)
            assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(hydra), job
            assert OmegaConf.is_struct(fast) and not OmegaConf.is_readonly(fast.hydra)
    # the repeated groups came from the cache; the new leaf key (seed) went through Hydra once
    assert composer.hits == 3 and composer.misses == 5


@pytest.mark.slow
def test_resuming_stored_results_trains_and_rewrites_nothing(tmp_path):
    """Stored A.6 results (Top-K subtract + Adagrad was stored with skip_completed=false, the rest
    with progress=False) re-run with `progress=false`: a job is identified by what changes its
    numbers, so all 12 are recognised, none trains, and no file under the sweep is touched."""
    import shutil

    stored = REPO / "results" / "a6" / "split_mnist" / "topk_subtract"
    for folder in [*stored.glob("adagrad/activation.k=64,*"), *stored.glob("adagrad/activation.k=128,*"),
                   *stored.glob("sgd/activation.k=64,*"), *stored.glob("sgd/activation.k=128,*")]:
        shutil.copytree(folder, tmp_path / "split_mnist" / "topk_subtract" / folder.parent.name / folder.name)
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in tmp_path.rglob("*") if f.is_file()}
    assert len(before) == 12
    proc = run_cli("--multirun", "+sweep=a6", "activation=topk_subtract", "optimizer=adagrad,sgd", "activation.k=64,128",
                   "progress=false", f"hydra.sweep.dir={tmp_path}", timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "12 of 12 jobs already complete, not re-run" in out
    assert "population 1/" not in out  # nothing trained
    after = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in tmp_path.rglob("*") if f.is_file() and f.name != "multirun.yaml"}
    assert after == before  # no result rewritten, no log file or folder added to a finished job


PRESETS = sorted([("sweep", f.stem) for f in (REPO / "conf" / "sweep").glob("*.yaml")]
                 + [("search", f.stem) for f in (REPO / "conf" / "search").glob("*.yaml")])
# A trial of a search preset: its leaf overrides, as the Optuna sweeper gives them
SEARCH_TRIALS = [
    ["activation=hard_ash", "optimizer=rmsprop", "activation.alpha=3.0", "activation.z_k=2.2", "optimizer.learning_rate=5e-06"],
    ["activation=relu", "optimizer=sgd", "optimizer.learning_rate=0.0004"],
]


@pytest.mark.parametrize("kind,preset", PRESETS, ids=[f"{k}={p}" for k, p in PRESETS])
def test_fast_collection_equals_hydras_for_every_preset(tmp_path, kind, preset):
    """For sampled jobs of every preset: SweepComposer.compose == Hydra's load_sweep_config (the
    `hydra` node included), and plain_job (what the population launchers collect without a job
    config) == what Hydra's run_job gives the job: its resolved config, task overrides and folder
    (its key order too: result.json keeps it). A grid preset's jobs must take that fast path."""
    import json
    import os

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf, open_dict

    import cl_sweep.config  # noqa: F401  (registers the structured schemas, as the entry point does)
    from hydra_plugins.cl_sweep_grid_sweeper.grid_sweeper import GridSweeper
    from hydra_plugins.cl_sweep_population_launcher._compose import SweepComposer

    head = [f"+{kind}={preset}"]
    # A.6 and the search presets keep their own folders (relative; nothing is written), the others take a Hydra override
    master_overrides = head + (["hydra/launcher=population"] if kind == "search" else [])
    if kind == "sweep" and preset != "a6":
        master_overrides.append(f"hydra.sweep.dir={tmp_path}/{preset}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="cl_sweep"):
        setup_globals()
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", master_overrides, RunMode.MULTIRUN)
        if kind == "sweep":
            sweeper = GridSweeper(grid=master.hydra.sweeper.grid)
            sweeper.hydra_context, sweeper.config = HydraContext(config_loader=loader, callbacks=None), master
            every = sweeper.job_overrides(head + [f"{group}=glob(*)" for group in sweeper.grid])
            first = [j for j in every if j[: len(head) + len(sweeper.grid)] == every[0][: len(head) + len(sweeper.grid)]]
            jobs = [first[0], first[-1]]  # two of one group: the first composed by Hydra, the second from the cache
        else:
            jobs = [head + trial for trial in SEARCH_TRIALS]
        composer = SweepComposer(loader, master)
        fast = 0
        for idx, job in enumerate(jobs):
            got = composer.plain_job(job, idx)
            if got is None:
                composer.compose(job)
                got = composer.plain_job(job, idx)
            cfg = loader.load_sweep_config(master, list(job))
            assert OmegaConf.to_yaml(composer.compose(job)) == OmegaConf.to_yaml(cfg), job
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = idx
            HydraConfig.instance().set_config(cfg)  # as Hydra's run_job
            folder = os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            want = (json.dumps(OmegaConf.to_container(task, resolve=True)), list(cfg.hydra.overrides.task), folder)
            if got is not None:
                fast += 1
                assert (json.dumps(got.cfg), got.overrides, got.output_dir) == want, job
    if kind == "sweep":
        assert fast == len(jobs)  # a grid preset's folders are known without a job config
    else:
        assert fast == 0  # its sweep.dir names the job's choices: Hydra's own path


def test_a_grid_of_groups_is_composed_from_one_change_compositions_equal_to_hydras(tmp_path):
    """The whole A.6 grid's 45 (activation, optimizer) groups: Hydra composes the first and the 12 that
    change one choice from it; the other 32 are built from those (`SweepComposer._factor`). The first
    job of every 4th group (both kinds) equals Hydra's load_sweep_config (the `hydra` node included), and plain_job
    equals what Hydra's run_job gives it (config, overrides, folder)."""
    import json
    import os

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext, RunMode
    from omegaconf import OmegaConf, open_dict

    import cl_sweep.config  # noqa: F401
    from hydra_plugins.cl_sweep_grid_sweeper.grid_sweeper import GridSweeper
    from hydra_plugins.cl_sweep_population_launcher._compose import SweepComposer

    head = ["+sweep=a6", "activation=glob(*)", "optimizer=glob(*)", "progress=false"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="cl_sweep"):
        setup_globals()
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [*head, f"hydra.sweep.dir={tmp_path}"], RunMode.MULTIRUN)
        sweeper = GridSweeper(grid=master.hydra.sweeper.grid)
        sweeper.hydra_context, sweeper.config = HydraContext(config_loader=loader, callbacks=None), master
        every = sweeper.job_overrides(list(master.hydra.overrides.task))
        firsts = {}
        for idx, job in enumerate(every):
            group = tuple(o for o in job if o.split("=")[0] in ("activation", "optimizer"))
            firsts.setdefault(group, (idx, job))
        assert len(firsts) == 45
        composer = SweepComposer(loader, master)
        for n, (idx, job) in enumerate(firsts.values()):
            composed = composer.compose(job)
            got = composer.plain_job(job, idx)
            if n % 4 and n != 44:  # Hydra's compose of every 4th group and the last (the suite's time)
                continue
            cfg = loader.load_sweep_config(master, list(job))
            assert OmegaConf.to_yaml(composed) == OmegaConf.to_yaml(cfg), job
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = idx
            HydraConfig.instance().set_config(cfg)
            folder = os.path.abspath(os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)))
            task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            want = (json.dumps(OmegaConf.to_container(task, resolve=True)), list(cfg.hydra.overrides.task), folder)
            assert got is not None and (json.dumps(got.cfg), got.overrides, got.output_dir) == want, job
    assert (composer.misses, composer.factored) == (1 + 8 + 4, 32)


def test_precompiling_in_threads_changes_no_number(tmp_path):
    """hydra.launcher.precompile (on by default on accelerators) compiles each structure's first
    population in parallel threads before training; the results must be those of a plain run."""
    args = ["--multirun", "+sweep=a6", "activation=relu", "optimizer=sgd,adagrad", *TINY]
    pre = run_cli(*args, "hydra.launcher.precompile=true", f"hydra.sweep.dir={tmp_path}/pre")
    assert pre.returncode == 0, pre.stderr[-3000:]
    assert "compiled the first population of 2 structures" in pre.stdout + pre.stderr
    plain = run_cli(*args, "hydra.launcher.precompile=false", f"hydra.sweep.dir={tmp_path}/plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "compiled the first population" not in plain.stdout + plain.stderr

    def by_point(root):
        return {tuple(sorted(r["overrides"])): r["final_accuracy"] for r in map(read_result, find_result_files(root))}

    a, b = by_point(tmp_path / "pre"), by_point(tmp_path / "plain")
    assert len(a) == 6 and a == b


def test_fit_dirname_cuts_only_over_long_parts_and_keeps_them_distinct():
    from cl_sweep.config import NAME_MAX, fit_dirname

    short = "split_mnist/relu/sgd/activation.k=64,optimizer.learning_rate=0.001"
    assert fit_dirname(short) == short  # every stored folder name is left as it was
    a, b = "x=1," * 100 + "y=1", "x=1," * 100 + "y=2"
    fa, fb = fit_dirname(f"top/{a}"), fit_dirname(f"top/{b}")
    assert fa != fb and fa == fit_dirname(f"top/{a}")  # distinct and stable
    assert fa.startswith("top/x=1,") and all(len(p.encode()) <= NAME_MAX for p in fa.split("/"))
    # multi-byte characters are never cut in half
    wide = fit_dirname("é" * 300)
    assert len(wide.encode()) <= NAME_MAX and wide.encode().decode() == wide


@pytest.mark.slow
def test_a_grid_point_with_many_overrides_gets_a_folder_name_the_file_system_takes(tmp_path):
    """A job folder named after its overrides (the presets' subdir) used to pass 255 bytes with enough
    of them (errno 36, a traceback, nothing trained); the presets cut it to fit. The population
    launcher's fast folder path and Hydra's own (basic launcher) give the same folder."""
    args = ["--multirun", "+sweep=strategies", "activation=hard_ash", "optimizer=adagrad", "strategy=online_ewc",
            "strategy.lambda=10.0", "strategy.gamma=0.9", "optimizer.learning_rate=2e-4", "activation.z_k=2.3",
            "activation.alpha=3.0", *TINY[:2], "n_seeds=1", "progress=false"]
    folders = {}
    for launcher in ("population", "basic"):
        proc = run_cli(*args, f"hydra/launcher={launcher}", f"hydra.sweep.dir={launcher}", cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        (found,) = find_result_files(tmp_path / launcher)
        folders[launcher] = found.parent.relative_to(tmp_path / launcher)
        assert len(found.parent.name.encode()) <= 255 and "~" in found.parent.name
    assert folders["population"] == folders["basic"]
