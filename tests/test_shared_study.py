"""One Optuna study shared by concurrent sweepers: exact budget, PostgreSQL and journal storages, crash safety.

The PostgreSQL tests use a real server: ``$CL_SWEEP_TEST_POSTGRES_URL`` when set, else the
one ``scripts/postgres.sh start`` installs (Debian's package) and starts on 127.0.0.1. When
that fails the tests fail with the script's message; they are never skipped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hydra_plugins.cl_sweep_optuna_sweeper import _budget
from hydra_plugins.cl_sweep_optuna_sweeper._budget import (
    BUDGET_ATTR,
    ask_tagged,
    ask_within_budget,
    budget_allows,
    held_trials,
)
from hydra_plugins.cl_sweep_optuna_sweeper._storage import (
    HEARTBEAT_ATTR,
    OWNER_ATTR,
    HeartbeatThread,
    fail_stale_trials,
    make_storage,
    owner_tag,
    stale_reason,
)

REPO = Path(__file__).resolve().parents[1]
APP = Path(__file__).parent / "apps" / "toy_objective" / "my_app.py"
SPACE = ["hydra.sweeper.params.x='interval(0,1)'", "y=range(0,4)"]  # 0..4: both ends included, as upstream
DISTRIBUTIONS = {"x": FloatDistribution(0, 1), "y": IntDistribution(0, 4)}
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def elsewhere(i: int) -> dict[str, Any]:
    """Owner tag of a (live, as far as this host can tell) worker on another machine."""
    return {"host": f"{HOST}-worker{i}", "pid": 1}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a PostgreSQL database for the tests (the env var, else scripts/postgres.sh)."""
    url = os.environ.get("CL_SWEEP_TEST_POSTGRES_URL")
    if url:
        return url
    script = REPO / "scripts" / "postgres.sh"
    # A fresh machine installs the package first (apt-get update + install): minutes.
    start = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=1200)
    if start.returncode != 0:
        pytest.fail(
            f"PostgreSQL is required for these tests and `scripts/postgres.sh start` failed (rc {start.returncode}):\n"
            f"{start.stderr}{start.stdout}\n(or set CL_SWEEP_TEST_POSTGRES_URL to a server's SQLAlchemy URL)",
            pytrace=False,
        )
    url = subprocess.run(["bash", str(script), "url"], capture_output=True, text=True, check=True).stdout.strip()
    assert url.startswith("postgresql"), url
    return url


@pytest.fixture
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Storage URL by the test's ``kind`` parameter.

    PostgreSQL: a fresh, empty schema of the test database (dropped afterwards), so the
    workers also create Optuna's tables concurrently, as on a new database.
    """
    kind = request.param
    if kind == "postgres":
        import sqlalchemy

        base = request.getfixturevalue("postgres_url")
        schema = f"test_{uuid.uuid4().hex[:12]}"
        engine = sqlalchemy.create_engine(base)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        finally:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()
    elif kind == "journal":
        yield f"journal://{tmp_path}/journal/study.log"
    else:
        yield f"sqlite:///{tmp_path}/study.db"


def study_name(tmp_path: Path) -> str:
    return f"shared-{tmp_path.name}"


def sweep_cmd(sweep_dir: Path, storage: str, name: str, n_trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "--multirun",
        "hydra/sweeper=optuna",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.storage='{storage}'",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={n_trials}",
        *SPACE,
        "markers=true",
        *extra,
    ]


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(storage, heartbeat_interval=None))


def markers(sweep_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The ``started``/``done`` records the toy app wrote, with their job dir number."""
    return [
        {**json.loads(p.read_text()), "job": int(p.parent.name)} for p in sorted(sweep_dir.glob(f"*/{kind}.json"))
    ]


def wait_until(condition: Any, procs: dict[str, subprocess.Popen], timeout: float = 120.0) -> None:
    """Poll ``condition()``; fail with the workers' output if one exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        for name, proc in procs.items():
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"worker {name} exited early (rc {proc.returncode}):\n{out}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the workers")
        time.sleep(0.05)


# ---------------------------------------------------------------- the budget rule (fast)


def test_budget_rule_on_hand_made_trials(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="rule", storage=f"sqlite:///{tmp_path}/rule.db", direction="maximize")
    for _ in range(3):
        study.add_trial(create_trial(value=1.0))  # 0, 1, 2: COMPLETE
    study.add_trial(create_trial(state=TrialState.FAIL))  # 3
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ask_tagged(study, {OWNER_ATTR: {"host": HOST, "pid": os.getppid()}})  # 4: live process on this host
    ask_tagged(study, {OWNER_ATTR: {"host": HOST, "pid": dead.pid}})  # 5: its process is gone
    ask_tagged(study, {OWNER_ATTR: elsewhere(1)})  # 6: another host, alive as far as we know
    study.ask()  # 7: untagged (an abandoned ask)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(8))

    def is_stale(t: FrozenTrial) -> bool:
        return stale_reason(t) is not None

    # below 8: COMPLETE 0-2, RUNNING 4 and 6 hold a slot; FAIL 3, dead 5 and untagged 7 do not
    assert held_trials(trials, below=8, is_stale=is_stale) == 5
    assert held_trials(trials, below=8) == 7  # without the stale check every RUNNING trial counts
    assert budget_allows(trials, 8, 6, is_stale=is_stale)
    assert not budget_allows(trials, 8, 5, is_stale=is_stale)
    assert not budget_allows(trials, 8, 6)
    # only lower numbers count: trial 2 sees 0 and 1
    assert budget_allows(trials, 2, 3) and not budget_allows(trials, 2, 2)
    assert not budget_allows(trials, 0, 0)


def test_ask_within_budget_denies_a_trial_that_lost_the_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name="race", storage=f"sqlite:///{tmp_path}/race.db", direction="maximize")
    study.add_trial(create_trial(value=1.0))  # 0
    real_ask = _budget.ask_tagged
    racers = []

    def ask_after_another_worker(study: optuna.Study, *args: Any, **kwargs: Any) -> Any:
        # Another worker passed the same pre-check and asks first: it gets the lower number.
        racers.append(real_ask(study, {OWNER_ATTR: elsewhere(2)}))
        return real_ask(study, *args, **kwargs)

    monkeypatch.setattr(_budget, "ask_tagged", ask_after_another_worker)
    trial, why = ask_within_budget(study, 2, DISTRIBUTIONS, owner=owner_tag())
    monkeypatch.setattr(_budget, "ask_tagged", real_ask)
    assert trial is None and "trial 2 not run" in why and "n_trials=2" in why
    denied = study.get_trials()[2]
    assert denied.state == TrialState.FAIL and denied.user_attrs[BUDGET_ATTR] is True
    assert denied.params == {}  # denied before sampling: nothing for the sampler to learn from
    assert denied.user_attrs[OWNER_ATTR]["pid"] == os.getpid()
    assert racers[0].number == 1 and study.get_trials()[1].state == TrialState.RUNNING

    # the pre-check alone stops a worker while the racer runs: nothing new is asked
    assert ask_within_budget(study, 2, DISTRIBUTIONS, owner=owner_tag())[0] is None
    assert len(study.get_trials()) == 3
    # the racer fails: its slot is free again, the next ask runs (with sampled params)
    study.tell(racers[0], state=TrialState.FAIL)
    trial, why = ask_within_budget(study, 2, DISTRIBUTIONS, owner=owner_tag())
    assert trial is not None and why == "" and trial.number == 3 and set(trial.params) == {"x", "y"}
    assert trial.user_attrs[OWNER_ATTR] == owner_tag()


@pytest.mark.parametrize("fail_rate", [0.0, 0.3])
def test_interleaved_workers_never_overshoot(fail_rate: float) -> None:
    """Random interleavings of K workers' steps (pre-check, ask, post-check, finish) on one study.

    Without failures the study ends with exactly n_trials COMPLETE trials; with failures
    never more (and a re-run, here one more worker, fills it up).
    """
    n_trials, n_workers = 5, 3
    for seed in range(60):
        rng = random.Random(seed)
        study = optuna.create_study(direction="maximize")
        # per worker: ("pre",) -> ("post", trial) -> ("run", trial) -> ("pre",) ... or ("stop",)
        state: list[tuple[Any, ...]] = [("pre",)] * n_workers
        while any(s[0] != "stop" for s in state):
            w = rng.choice([i for i, s in enumerate(state) if s[0] != "stop"])
            step = state[w]
            if step[0] == "pre":
                held = held_trials(study.get_trials(deepcopy=False))
                state[w] = ("ask",) if held < n_trials else ("stop",)
            elif step[0] == "ask":
                trial = ask_tagged(study, {OWNER_ATTR: elsewhere(w)})
                state[w] = ("post", trial)
            elif step[0] == "post":
                trial = step[1]
                if budget_allows(study.get_trials(deepcopy=False), trial.number, n_trials):
                    state[w] = ("run", trial)
                else:
                    study.tell(trial, state=TrialState.FAIL)
                    state[w] = ("stop",)
            else:  # the running trial ends
                if rng.random() < fail_rate:
                    study.tell(step[1], state=TrialState.FAIL)
                else:
                    study.tell(step[1], 1.0)
                state[w] = ("pre",)
            # invariant: trials allowed to run (running now or COMPLETE) never exceed the budget
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            assert complete + sum(1 for s in state if s[0] == "run") <= n_trials, seed
        if fail_rate == 0.0:
            assert complete == n_trials, seed
        else:
            assert complete <= n_trials, seed


def test_pid_reuse_and_own_trials_are_stale() -> None:
    tag = owner_tag()
    assert tag["host"] == HOST and tag["pid"] == os.getpid() and isinstance(tag.get("start"), int)
    parent = {"host": HOST, "pid": os.getppid()}
    trial = create_trial(state=TrialState.RUNNING, user_attrs={OWNER_ATTR: parent})
    assert stale_reason(trial) is None
    reused = create_trial(state=TrialState.RUNNING, user_attrs={OWNER_ATTR: {**parent, "start": -1}})
    assert stale_reason(reused) == f"owner process {os.getppid()} is gone"
    mine = create_trial(state=TrialState.RUNNING, user_attrs={OWNER_ATTR: tag})
    assert stale_reason(mine) is not None and stale_reason(mine, own_live_numbers=[mine.number]) is None


def test_journal_heartbeat_fails_dead_workers_of_other_hosts(tmp_path: Path) -> None:
    storage = make_storage(f"journal://{tmp_path}/hb.log")
    study = optuna.create_study(study_name="hb", storage=storage, direction="maximize")
    now = time.time()
    beats = {"silent": now - 1000, "beating": now, "no_beat": None}
    trials = {}
    for i, (name, beat) in enumerate(beats.items()):
        attrs = {HEARTBEAT_ATTR: beat} if beat is not None else None
        trials[name] = ask_tagged(study, {OWNER_ATTR: elsewhere(i)}, attrs)
    assert fail_stale_trials(study, heartbeat_grace=120) == [trials["silent"].number]
    assert fail_stale_trials(study) == []  # without a grace period only ownership counts

    # the thread keeps the beat fresh while a job runs
    before = study.get_trials()[trials["beating"].number].system_attrs[HEARTBEAT_ATTR]
    with HeartbeatThread(storage, [trials["beating"]._trial_id], interval=0.05):
        time.sleep(0.3)
    after = study.get_trials()[trials["beating"].number].system_attrs[HEARTBEAT_ATTR]
    assert after > before


# ---------------------------------------------------------------- real sweeps (subprocesses)


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["postgres", "journal"], indirect=True)
def test_two_workers_fill_one_study_exactly(storage_url: str, tmp_path: Path) -> None:
    n_trials = 8
    name = study_name(tmp_path)
    go = tmp_path / "go"
    # Every job waits for `go`, which appears once both workers are inside a job: the
    # workers really overlap, and both contribute.
    common = [f"wait_for={go}", "sleep=0.3"]
    dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
    procs = {
        w: subprocess.Popen(
            sweep_cmd(dirs[w], storage_url, name, n_trials, f"hydra.sweeper.n_jobs={n_jobs}", *common),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w, n_jobs in (("a", 1), ("b", 2))
    }
    t0 = time.monotonic()
    try:
        wait_until(lambda: all(markers(d, "started") for d in dirs.values()), procs)
        go.touch()
        outs = {w: p.communicate(timeout=180)[0] for w, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    for w, p in procs.items():
        assert p.returncode == 0, outs[w]
    elapsed = time.monotonic() - t0

    trials = load(storage_url, name).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials, (elapsed, [(t.number, t.state) for t in trials], outs)
    assert len({t.number for t in trials}) == len(trials)
    # nothing left RUNNING; the only FAILs are asks that lost the race for the last slots
    for t in trials:
        assert t.state != TrialState.RUNNING, t
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get(BUDGET_ATTR) is True and t.params == {}, t
    pids = {w: p.pid for w, p in procs.items()}
    by_worker = {w: [t for t in complete if t.user_attrs[OWNER_ATTR]["pid"] == pid] for w, pid in pids.items()}
    assert all(by_worker.values()), {w: len(ts) for w, ts in by_worker.items()}  # both contributed
    assert sum(len(ts) for ts in by_worker.values()) == n_trials

    # every COMPLETE trial is exactly one job that ran, in the job dir named by its number,
    # and every job that started finished and was told: no lost, no duplicate result
    for w, ts in by_worker.items():
        done = markers(dirs[w], "done")
        assert len(markers(dirs[w], "started")) == len(done) == len(ts)
        ran = sorted((r["job"], r["x"], r["y"], r["value"], r["pid"]) for r in done)
        told = sorted((t.number, t.params["x"], t.params["y"], t.value, pids[w]) for t in ts)
        assert ran == told


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["sqlite", "postgres"], indirect=True)
def test_sigkill_mid_job_then_rerun_finishes_the_study(storage_url: str, tmp_path: Path) -> None:
    n_trials = 3
    name = study_name(tmp_path)
    sweep_dir = tmp_path / "sweep"
    hang = tmp_path / "hang"
    # The first job creates `hang` and sleeps; once it has started, the whole sweep gets SIGKILL.
    cmd = sweep_cmd(sweep_dir, storage_url, name, n_trials, f"hang_once={hang}")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        wait_until(lambda: hang.exists() and markers(sweep_dir, "started"), {"first": proc})
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed = load(storage_url, name).get_trials()
    assert [t.state for t in killed] == [TrialState.RUNNING]  # left behind by the dead process
    assert killed[0].user_attrs[OWNER_ATTR]["pid"] == proc.pid

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out
    assert f"Trial 0 was RUNNING but is stale (owner process {proc.pid} is gone)" in out

    trials = load(storage_url, name).get_trials()
    assert trials[0].state == TrialState.FAIL and BUDGET_ATTR not in trials[0].user_attrs
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * n_trials  # the killed trial was replaced
    assert [r["job"] for r in markers(sweep_dir, "started")] == [0, 1, 2, 3]
    assert [r["job"] for r in markers(sweep_dir, "done")] == [1, 2, 3]

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr
