"""The `python -m cl_sweep` entry point end to end: bad input, result file, determinism, resume, real data."""

from __future__ import annotations

import json
import re

import pytest

from cl_sweep.results import SCHEMA_VERSION, read_result
from conftest import TEST_SLICE, run_cli

# A documented small slice of real MNIST: 200 examples per task, 2 seeds, so one job is seconds.
SMOKE = ["benchmark.limit_per_task=200", TEST_SLICE, "n_seeds=2", "progress=false"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["activation=hardash"], "hardash"),  # unknown group option: Hydra lists the allowed ones
        (["optimizer=adamw"], "adamw"),
        (["activation.alphaa=3"], "alphaa"),  # misspelt key
        (["+optimizer.lerning_rate=0.1"], "Did you mean optimizer.learning_rate?"),  # ... added with +: used to train
        (["++activation.alphaa=3"], "activation=hard_ash has no key 'alphaa'"),
        (["optimizer.learning_rate=-0.1"], "optimizer.learning_rate=-0.1"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate=0"),
        (["activation=topk_subtract", "activation.k=0"], "activation.k=0"),
        (["activation=topk_mask", "activation.k=5000"], "activation.k=5000"),
        (["activation=lwta", "activation.groups=7"], "activation.groups=7"),
        (["optimizer=rmsprop", "optimizer.decay=1.2"], "optimizer.decay=1.2"),
        (["optimizer=sgdm", "optimizer.momentum=1"], "optimizer.momentum=1"),
    ],
)
def test_bad_input_exits_nonzero_with_one_clear_paragraph(tmp_path, args, needle):
    proc = run_cli(*args, f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    err = proc.stderr
    assert needle in err
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert not (tmp_path / "result.json").exists()  # nothing trained, nothing written


def test_two_hydra_modes_are_refused_in_one_paragraph_that_names_what_works(tmp_path):
    """`--multirun --cfg job` (a user wanting to see a sweep's configs) is Hydra's bare ValueError with a
    traceback; ours names the two flags and the two commands that do what was meant, and both run."""
    proc = run_cli("--multirun", "--cfg", "job", "activation=relu,hard_ash", f"hydra.sweep.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    [paragraph] = [line for line in proc.stderr.splitlines() if line.startswith("cl_sweep: ")]
    assert "--multirun and --cfg cannot be combined" in paragraph
    one = run_cli("--cfg", "job", "activation=relu", timeout=120)
    assert one.returncode == 0 and "name: relu" in one.stdout, one.stderr[-2000:]
    listed = run_cli("--multirun", "activation=relu,hard_ash", "hydra/sweeper=grid", "hydra.sweeper.dry_run=true",
                     f"hydra.sweep.dir={tmp_path}", timeout=120)
    assert listed.returncode == 0 and "2 jobs (dry run: nothing launched)" in listed.stdout, listed.stderr[-2000:]
    assert not list(tmp_path.rglob("result.json"))


def test_unknown_option_lists_allowed_options(tmp_path):
    proc = run_cli("activation=hardash", f"hydra.run.dir={tmp_path}", timeout=120)
    assert "hard_ash" in proc.stderr and "topk_subtract" in proc.stderr


@pytest.mark.slow
def test_real_mnist_smoke_run_writes_schema_result_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    smoke = [o for o in SMOKE if not o.startswith("benchmark.test_limit_per_task")]  # scored on the whole test set
    for out in (a, b):
        proc = run_cli(*smoke, "skip_completed=false", f"hydra.run.dir={out}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    ra, rb = read_result(a / "result.json"), read_result(b / "result.json")
    assert ra["final_accuracy"] == rb["final_accuracy"]  # same config and seed: identical numbers
    assert ra["accuracy_matrix"] == rb["accuracy_matrix"]
    assert ra["status"] == "ok" and ra["seeds"] == [0, 1] and ra["n_seeds_requested"] == 2
    assert ra["activation"] == "hard_ash" and ra["optimizer"] == "adagrad" and ra["benchmark"] == "split_mnist"
    assert sorted(ra["overrides"]) == sorted(smoke + ["skip_completed=false"])
    assert all(len(m) == 5 and all(len(r) == 5 for r in m) for m in ra["accuracy_matrix"])
    # the overall accuracy after the last task is the test-count-weighted mean of its per-task row
    counts = [980 + 1135, 1032 + 1010, 982 + 892, 958 + 1028, 974 + 1009]
    for acc, m in zip(ra["final_accuracy"], ra["accuracy_matrix"]):
        assert acc == pytest.approx(sum(c * x for c, x in zip(counts, m[-1])) / 10000, abs=1e-6)
    # 200 examples already learn task 1 (it is tested right after its training)
    assert all(m[0][0] > 0.5 for m in ra["accuracy_matrix"])
    assert "final accuracy:" in proc.stdout and "result:" in proc.stdout


@pytest.mark.slow
def test_completed_job_is_not_rerun_and_changed_overrides_are(tmp_path):
    proc = run_cli(*SMOKE, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = (tmp_path / "result.json").read_text()
    again = run_cli(*SMOKE, f"hydra.run.dir={tmp_path}")
    assert again.returncode == 0
    assert "already complete" in again.stderr
    assert (tmp_path / "result.json").read_text() == first
    other = run_cli(*SMOKE, "seed=3", f"hydra.run.dir={tmp_path}")
    assert other.returncode == 0
    assert json.loads((tmp_path / "result.json").read_text())["seeds"] == [3, 4]


@pytest.mark.slow
def test_diverged_job_still_writes_its_result(tmp_path):
    proc = run_cli(
        *SMOKE, "activation=relu", "optimizer=sgd", "optimizer.learning_rate=1e38", "model.update_clip=null",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = read_result(tmp_path / "result.json")
    assert result["status"] == "diverged" and all(result["diverged"])
    assert result["final_accuracy_mean"] is None and result["final_accuracy"] == [None, None]
    assert "DIVERGED" in proc.stdout


@pytest.mark.slow
def test_early_stop_skips_remaining_seeds(tmp_path):
    proc = run_cli(
        *[a for a in SMOKE if not a.startswith("n_seeds")], "n_seeds=5", "early_stop.enabled=true",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = read_result(tmp_path / "result.json")
    # 200 examples per task is far from 65% final accuracy: only the first two seeds run
    assert result["early_stopped"] is True and result["seeds"] == [0, 1] and result["n_seeds_requested"] == 5


@pytest.mark.slow
def test_adam_bias_correction_switch_changes_training(tmp_path):
    finals = {}
    for flag in ("true", "false"):
        proc = run_cli(*SMOKE, "optimizer=adam", f"optimizer.bias_correction={flag}", f"hydra.run.dir={tmp_path / flag}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = read_result(tmp_path / flag / "result.json")
        assert result["status"] == "ok" and result["hyperparameters"]["optimizer.bias_correction"] is (flag == "true")
        finals[flag] = result["accuracy_matrix"]
    assert finals["true"] != finals["false"]


@pytest.mark.slow
def test_sgd_exp_decay_trains_on_real_mnist(tmp_path):
    proc = run_cli(*SMOKE, "optimizer=sgd_exp_decay", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = read_result(tmp_path / "result.json")
    assert result["status"] == "ok" and result["optimizer"] == "sgd_exp_decay"
    assert all(m[0][0] > 0.5 for m in result["accuracy_matrix"])  # learns task 1


@pytest.mark.slow
def test_permuted_mnist_smoke_run_records_stability_and_plasticity(tmp_path):
    from cl_sweep.analysis import metrics

    proc = run_cli(
        *[a for a in SMOKE if "limit_per_task" not in a], "benchmark.limit_per_task=2000",
        "benchmark=permuted_mnist", "benchmark.num_tasks=3", f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = read_result(tmp_path / "result.json")
    assert r["schema"] == SCHEMA_VERSION and r["benchmark"] == "permuted_mnist"
    # schema 3 on permuted tasks: every permutation's class accuracy of the final model, the untrained
    # model's accuracy on the tasks evaluated before training (task 1 only, as in the matrix)
    assert len(r["class_accuracy"][0]) == 10 and all(0 <= a <= 1 for a in r["class_accuracy"][0])
    assert r["initial_accuracy"][0][0] is not None and 0 < r["initial_accuracy"][0][0] < 0.3
    m = r["accuracy_matrix"][0]
    assert [[v is not None for v in row] for row in m] == [[True, False, False], [True, True, False], [True, False, True]]
    assert all(v > 0.3 for v in metrics.plasticity(m))  # every new permutation is learnt (chance: 0.1)
    assert len(metrics.stability(m)) == 3
    assert r["forgetting"] == [None, None]  # needs the full matrix (benchmark.full_matrix=true)
    assert all(0 < a < 0.5 for a in r["active_fraction"][0])  # Hard ASH: most units silent


@pytest.mark.slow
def test_split_mnist_result_carries_the_v2_metrics(tmp_path):
    proc = run_cli(*SMOKE, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = read_result(tmp_path / "result.json")
    from cl_sweep.analysis import metrics

    for m, f, b, avg in zip(r["accuracy_matrix"], r["forgetting"], r["backward_transfer"], r["average_accuracy"]):
        assert f == pytest.approx(metrics.forgetting(m)) and b == pytest.approx(metrics.backward_transfer(m))
        assert avg == pytest.approx(metrics.average_accuracy(m)) and len(avg) == 5


@pytest.mark.slow
def test_ewc_strength_changes_forgetting_on_real_mnist(tmp_path):
    runs = {}
    for lam in ("0", "1e5"):
        proc = run_cli(*SMOKE, "strategy=ewc", f"strategy.lambda={lam}", "strategy.samples=64", f"hydra.run.dir={tmp_path / lam}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[lam] = read_result(tmp_path / lam / "result.json")
    assert runs["1e5"]["hyperparameters"]["strategy.name"] == "ewc"
    assert runs["1e5"]["hyperparameters"]["strategy.lambda"] == 1e5
    # a strong anchor keeps the first task: its final accuracy on task 1 is higher than without
    first = lambda r: sum(m[-1][0] for m in r["accuracy_matrix"]) / len(r["accuracy_matrix"])
    assert first(runs["1e5"]) > first(runs["0"])


# What must never reach the console of a job or a sweep: a Python warning with its source line
# (`file.py:201: RuntimeWarning: ...` followed by the code), JAX's backend probing, a traceback.
NOISE = re.compile(r"\.py:\d+: \w*Warning|libtpu|Unable to initialize backend|Traceback")


@pytest.mark.slow
def test_default_job_and_a6_slice_show_no_warning_source_line_or_backend_probe(tmp_path):
    job = run_cli("benchmark.limit_per_task=64", "n_seeds=1", "progress=false", cwd=tmp_path)
    assert job.returncode == 0, job.stderr[-2000:]
    sweep = run_cli("--multirun", "+sweep=a6", "activation=relu", "optimizer=sgd", "hydra.sweeper.stride=3",
                    "benchmark.limit_per_task=64", "n_seeds=1", "progress=false", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert list(tmp_path.glob("multirun/*/split_mnist/relu/sgd/*/result.json"))
    for proc in (job, sweep):
        seen = proc.stdout + proc.stderr
        assert not NOISE.search(seen), NOISE.search(seen).group(0) + "\n" + seen[-3000:]
        assert "final accuracy:" in seen


@pytest.mark.slow
def test_kernel_fallback_is_said_once_per_machine_as_one_log_line(tmp_path):
    """Where the CPU kernels cannot be used (here: no compiler), the first job on the machine says so
    in one clean log line; later jobs, which find that recorded in the cache, do not repeat it."""
    from cl_sweep.data.datasets import cache_dir

    env = {"CL_SWEEP_DATA_DIR": str(tmp_path / "cache"), "CXX": str(tmp_path / "no-such-compiler")}
    args = ("benchmark.limit_per_task=64", "n_seeds=1", "progress=false", f"data_dir={cache_dir()}")
    first = run_cli(*args, "hydra.run.dir=a", cwd=tmp_path, env=env)
    second = run_cli(*args, "hydra.run.dir=b", cwd=tmp_path, env=env)
    for proc in (first, second):
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not NOISE.search(proc.stdout + proc.stderr)
    said = [line for line in (first.stdout + first.stderr).splitlines() if "kernels are not used" in line]
    assert len(said) == 1 and "[WARNING]" in said[0] and "no-such-compiler" in said[0], first.stdout + first.stderr
    assert "kernels are not used" not in second.stdout + second.stderr
    assert json.loads((tmp_path / "a" / "result.json").read_text())["final_accuracy"] == json.loads(
        (tmp_path / "b" / "result.json").read_text())["final_accuracy"]


# --- no stored result from uncommitted code -----------------------------------------------------
# The child process runs `python -m cl_sweep` with the checkout's revision reported dirty and the
# stored results folder moved into tmp_path, so the real results/ is never touched.
_DIRTY_CHILD = (
    "import runpy, sys; from pathlib import Path; import cl_sweep.results as r; "
    "r.SOURCE_ROOT = Path(sys.argv.pop(1)); r.source_revision = lambda: 'abc123+dirty'; "
    "sys.argv[0] = 'cl_sweep'; runpy.run_module('cl_sweep', run_name='__main__')"
)


def run_dirty(root, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _DIRTY_CHILD, str(root), *args], capture_output=True, text=True, timeout=600)


def test_check_results_folder_rules(tmp_path, monkeypatch):
    import cl_sweep.results as results

    monkeypatch.setattr(results, "SOURCE_ROOT", tmp_path)
    monkeypatch.setattr(results, "source_revision", lambda: "abc123+dirty")
    with pytest.raises(ValueError, match=r"uncommitted changes under src/ or conf/ \(revision abc123\+dirty\)"):
        results.check_results_folder(tmp_path / "results" / "a6" / "job", allow_dirty=False)
    with pytest.raises(ValueError, match="allow_dirty_results=true"):
        results.check_results_folder(tmp_path / "results", allow_dirty=False)
    results.check_results_folder(tmp_path / "results" / "a6", allow_dirty=True)  # the explicit override
    results.check_results_folder(tmp_path / "outputs" / "job", allow_dirty=False)  # not the stored results
    results.check_results_folder(tmp_path / "results_old", allow_dirty=False)  # a sibling, not inside
    monkeypatch.setattr(results, "source_revision", lambda: "abc123")  # committed code
    results.check_results_folder(tmp_path / "results" / "a6", allow_dirty=False)
    monkeypatch.setattr(results, "source_revision", lambda: None)  # an installed wheel: no checkout
    results.check_results_folder(tmp_path / "results" / "a6", allow_dirty=False)


@pytest.mark.slow
def test_uncommitted_code_cannot_write_into_stored_results(tmp_path):
    job = tmp_path / "results" / "mine"
    proc = run_dirty(tmp_path, *SMOKE, f"hydra.run.dir={job}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("cl_sweep:") == 1 and "Traceback" not in proc.stderr
    assert "uncommitted changes" in proc.stderr and "allow_dirty_results=true" in proc.stderr
    assert not (job / "result.json").exists()
    # the population launcher refuses the whole sweep before training any of it
    sweep = tmp_path / "results" / "sweep"
    proc = run_dirty(tmp_path, "--multirun", *SMOKE, "seed=0,1", "hydra/launcher=population", f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0 and "uncommitted changes" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(sweep.rglob("result.json"))
    # with the override the job trains, and its file says how it was made
    proc = run_dirty(tmp_path, *SMOKE, f"hydra.run.dir={job}", "allow_dirty_results=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stored = read_result(job / "result.json")
    assert "allow_dirty_results=true" in stored["overrides"] and stored["versions"]["git"] == "abc123+dirty"
    # outside the stored results nothing is checked
    proc = run_dirty(tmp_path, *SMOKE, f"hydra.run.dir={tmp_path / 'outputs' / 'job'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
