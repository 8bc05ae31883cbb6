"""Every command the README shows is run, as written, by a test of this file.

The project rule: "Every command the README shows is run by a test exactly as written (on a small
data slice where needed): a documented command that crashes is a bug, not a typo." README.md is
parsed at collection time, so a command added to it later is covered without editing this file.

Which text is a command
-----------------------
* Fenced code blocks whose info string is ``bash``, ``sh``, ``shell`` or ``console``: every line
  is a command, after joining ``\\`` continuations and removing a trailing ``# comment`` (a ``#``
  at the start of a word, outside quotes). Blank and comment-only lines are skipped.
* A fenced block of any info string (none included) with lines starting with ``$ `` is a console
  transcript: only the ``$ `` lines are commands; the lines after one, up to the next ``$ ``
  line, are its shown output. Unlabelled blocks without ``$ `` lines (program output, the layout
  tree) hold no commands.
* Inline code spans in the prose and in tables (a span may wrap over a line break; whitespace is
  collapsed) are commands when they start with ``python -m cl_sweep`` (also
  ``python -m cl_sweep.analysis.tables`` / ``.figures``), ``.venv/bin/python -m cl_sweep``, ``pip install``
  or ``.venv/bin/pip install``, ``make <target>``, an interpreter on a project script
  (``python|.venv/bin/python|bash|sh benchmarks/...`` or ``scripts/...``), or a script path with
  arguments (``benchmarks/soak.py --jobs 240``, ``scripts/tfds_offline.py ...``). A bare path
  (``benchmarks/grid_time.py``), a bare script name (``grid_time.py --slice ...``), a bare
  override (``n_seeds=3``, ``hydra.sweeper.dry_run=true``) and other tools (``tfds build``,
  ``npm pack``) are references, not commands.

Every distinct command is one parameter of `test_readme_command`, whose id is the command.

How a command is run
--------------------
Through ``bash -c`` in a fresh scratch folder that holds a symlink to every top-level entry of the
repository (``.venv``, ``Makefile``, ``conf``, ``src``, ``results``, ``benchmarks``, ``scripts``,
...) except ``.git`` and the output folders ``outputs/``, ``multirun/``, ``tables/`` and
``figures/``, so that outputs written relative to the working directory land in the scratch
folder and nothing in the checkout changes. ``.venv/bin`` is first on ``PATH`` (``python`` and
``pip`` are the venv's). The MNIST cache is the usual one (``$CL_SWEEP_DATA_DIR`` if the caller
set it, else ``~/.cache/cl_sweep``): nothing is downloaded. A folder a table/figure command reads
that a previous documented command would have written (``make tables RESULTS=multirun/a6``, the
``other/folder`` of ``python -m cl_sweep.analysis.tables results other/folder ...``) is seeded with copies of
a few stored results from ``results/a6``.

The only change to a command is a small slice, appended as extra Hydra overrides at the end of a
command whose last program is a training entry point (``python -m cl_sweep``, not ``--cfg`` /
``--help``, not a transcript that shows the CLI's error paragraph):

* always ``benchmark.limit_per_task=64 benchmark.test_limit_per_task=100 n_seeds=1 progress=false``:
  64 training examples per task, scored on the first 100 test examples of each task, one seed, no
  progress bars (the numbers are meaningless; the code path is the real one);
* ``benchmark.num_tasks=2`` when the job is on permuted MNIST (``benchmark=permuted_mnist`` in the
  command, or a ``+sweep=`` preset that overrides ``/benchmark: permuted_mnist``): its 100 tasks
  would take minutes even on the slice;
* for a grid sweep (``+sweep=...`` or ``hydra/sweeper=grid``), ``hydra.sweeper.stride=S``: the
  command is first run with ``hydra.sweeper.dry_run=true`` appended (which composes the sweep and
  prints its job count N), then with ``S = ceil(N / 2)`` when N > 2, so the first and the middle
  job of the grid run (all of them when N <= 2);
* for an Optuna sweep (``hydra/sweeper=optuna``), ``hydra.sweeper.n_trials=1`` (the last value of
  a key wins in Hydra, so it also caps a command that sets ``n_trials`` itself).

``hydra.run.dir`` / ``hydra.sweep.dir`` are never added: outputs go where the command puts them,
relative to the scratch folder (an added sweep dir once hid a crash of the Optuna command).

What is asserted
----------------
Exit status 0 and no ``Traceback`` in stdout or stderr. For a training command: the result files
are where the command's outputs go (``outputs/`` for a run, ``multirun/`` for a multirun, or the
``hydra.run.dir`` / ``hydra.sweep.dir`` the command names), each one valid
(`cl_sweep.results.read_result`), exactly as many as jobs ran: for a grid sweep the strided count,
for Optuna one, for Hydra's basic sweeper the product of the comma lists' lengths, for a run one.
Table and figure commands must write Markdown tables / PNG figures. A transcript
whose shown output is the CLI's error paragraph (``cl_sweep: ...``) must exit non-zero with that
output, no traceback and no result file.

Commands that are not run
-------------------------
`EXCLUDED` maps each command that cannot or must not run inside the test suite to the reason,
and to a cheaper real check where one exists (``make -n`` for a recipe, the grid sweeper's
``dry_run`` for a sweep that needs SLURM, a tiny run of a benchmark script, ...); its parameter
runs that check instead. `test_exclusions_are_in_the_readme` fails when an entry no longer
appears in the README (a stale exclusion). A command with a placeholder (``...``, ``…``,
``<name>``, an all-caps value such as ``=N`` or ``DIR``) is not runnable as written: its test
fails unless `EXCLUDED` gives it a reason (the README should show a complete command instead).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import pytest

from conftest import TEST_SLICE

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
TIMEOUT_S = 480

# Folders commands write relative to their working directory: never linked into the scratch folder.
OUTPUT_DIRS = {"outputs", "multirun", "tables", "figures"}

SLICE = ("benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false")
PERMUTED_SLICE = ("benchmark.num_tasks=2",)
OPTUNA_SLICE = ("hydra.sweeper.n_trials=1",)
GRID_MAX_JOBS = 2


# --------------------------------------------------------------------------------------------
# Parsing the README
# --------------------------------------------------------------------------------------------

@dataclass
class Command:
    text: str                      # the command as written (continuations joined, comment removed)
    lines: list[int] = field(default_factory=list)   # README lines where it appears
    output: tuple[str, ...] = ()   # the output a console transcript shows for it


SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([^\s`]*)")
INLINE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
INLINE_COMMAND = re.compile(
    r"""^(?:
        (?:\.venv/bin/)?python3?\s+-m\s+cl_sweep\b          # the entry point and its modules
      | (?:\.venv/bin/)?pip\s+install\s
      | make\s+[A-Za-z]                                     # make <target>
      | (?:bash|sh|(?:\.venv/bin/)?python3?)\s+(?:benchmarks|scripts)/\S
      | (?:benchmarks|scripts)/\S+\s+\S                     # a script invoked by its path, with arguments
    )""",
    re.X,
)
PLACEHOLDER = re.compile(r"\.\.\.|…|<[^<>\s][^<>]*>|(?:^|[\s=])[A-Z][A-Z_]*(?=\s|$)")


def clean_shell_line(line: str) -> str:
    """Removes a trailing `# comment` (a # starting a word, outside quotes); collapses blanks outside quotes."""
    out: list[str] = []
    quote = None
    for i, ch in enumerate(line):
        if quote:
            out.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        if ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
            continue
        out.append(ch)
    return "".join(out).strip()


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """[(lineno, text)] with `\\`-continued lines joined onto their first line."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for no, text in lines:
        if pending is not None:
            no, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (no, text.rstrip()[:-1].rstrip())
            continue
        joined.append((no, text))
    if pending is not None:
        joined.append(pending)
    return joined


def parse_block(lang: str, body: list[tuple[int, str]]) -> list[tuple[int, str, tuple[str, ...]]]:
    """Commands of one fenced block: [(lineno, command, shown output)]."""
    found = []
    if any(t.startswith("$ ") for _, t in body):  # a console transcript
        current: list | None = None
        for no, text in join_continuations(body):
            if text.startswith("$ "):
                current = [no, clean_shell_line(text[2:]), []]
                found.append(current)
            elif current is not None and text.strip():
                current[2].append(text.strip())
        return [(no, cmd, tuple(out)) for no, cmd, out in found if cmd]
    if lang not in SHELL_LANGS:
        return []
    for no, text in join_continuations(body):
        cmd = clean_shell_line(text)
        if cmd:
            found.append((no, cmd, ()))
    return found


def readme_commands(markdown: str) -> list[Command]:
    """Every distinct command of a README text, in order of first appearance."""
    lines = markdown.splitlines()
    found: list[tuple[int, str, tuple[str, ...]]] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append((j + 1, lines[j]))
            j += 1
        found += parse_block(lang, body)
        prose += [""] * (j + 1 - i)  # keeps prose line numbers = README line numbers
        i = j + 1
    text = "\n".join(prose)
    for m in INLINE_SPAN.finditer(text):
        span = m.group(1)
        if "\n\n" in span or re.search(r"\n\s*\n", span):
            continue
        cmd = " ".join(span.split())
        if INLINE_COMMAND.match(cmd):
            found.append((text.count("\n", 0, m.start()) + 1, cmd, ()))
    commands: dict[str, Command] = {}
    for no, cmd, out in sorted(found, key=lambda t: t[0]):
        c = commands.setdefault(cmd, Command(cmd))
        c.lines.append(no)
        c.output = c.output or out
    return list(commands.values())


def is_placeholder(cmd: str) -> bool:
    return bool(PLACEHOLDER.search(cmd))


# --------------------------------------------------------------------------------------------
# Commands that are not run as written
# --------------------------------------------------------------------------------------------

Check = Union[str, Callable[[Path, dict], None], None]


@dataclass(frozen=True)
class Excluded:
    reason: str
    check: Check = None        # a cheaper real check: a bash line run in a scratch folder, or a function
    expect: str | None = None  # a regex the check's output must match
    fails: bool = False        # the check must exit non-zero (a documented clean failure), no traceback
    slow: bool = False
    # The check only reads (a benchmark printing figures), so entries with the same check line may
    # share one run of it in a session, each still matching its own ``expect``.
    shared: bool = False


def _pyproject_extras(*names: str) -> str:
    return (
        ".venv/bin/python -c \"import tomllib; x = tomllib.load(open('pyproject.toml', 'rb'))"
        "['project']['optional-dependencies']; "
        f"missing = set({list(names)!r}) - set(x); assert not missing, f'no extra {{missing}}'; "
        f"print({{k: x[k] for k in {list(names)!r}}})\""
    )


def _rerun_stored_overrides(workdir: Path, env: dict) -> None:
    """`python -m cl_sweep <overrides>` re-runs a job: the overrides of a stored result, on the slice."""
    from cl_sweep.results import find_result_files, read_result

    stored = next(iter(find_result_files(REPO / "results" / "a6" / "split_mnist" / "hard_ash" / "adagrad")))
    overrides = read_result(stored)["overrides"]
    cmd = "python -m cl_sweep " + " ".join(shlex.quote(o) for o in overrides)
    proc = run_bash(cmd + " " + " ".join(SLICE), workdir, env)
    assert_ran(proc, cmd)
    results = result_files(workdir / "outputs")
    assert len(results) == 1, f"{cmd}: expected one result.json under outputs/, found {results}"


HONEST_SWEEP = ("python -m cl_sweep --multirun activation=relu,hard_ash benchmark.validation_fraction=0.1 "
                "hydra.sweep.dir=multirun/honest")
HONEST_TABLES = "python -m cl_sweep.analysis.tables multirun/honest --select validation --out tables_honest"


def _honest_selection(workdir: Path, env: dict) -> None:
    """The tables command of "Honest model selection" reads the sweep of the line above it (stored results
    have no validation accuracy, and are refused): the sweep on the slice, then the command as written."""
    sweep = f"{HONEST_SWEEP} {' '.join(SLICE)}"
    assert_ran(run_bash(sweep, workdir, env), sweep)
    assert len(result_files(workdir / "multirun" / "honest")) == 2
    assert_ran(run_bash(HONEST_TABLES, workdir, env), HONEST_TABLES)
    table2 = (workdir / "tables_honest" / "split_mnist" / "table2.md").read_text()
    assert "by validation accuracy; test accuracy reported" in table2, table2


CURVES_RUN = "python -m cl_sweep eval_every=100 benchmark.limit_per_task=4000 n_seeds=2 hydra.run.dir=outputs/curves"
CURVES_FIGURES = "python -m cl_sweep.analysis.figures outputs/curves --out figures_curves"


def _learning_curves(workdir: Path, env: dict) -> None:
    """The figures command of "Learning curves" reads the run of the line above it: that run on the
    slice (its curve: before training and after each task), then the command as written."""
    run = f"{CURVES_RUN} {' '.join(SLICE)}"
    assert_ran(run_bash(run, workdir, env), run)
    proc = run_bash(CURVES_FIGURES, workdir, env)
    assert_ran(proc, CURVES_FIGURES)
    assert (workdir / "figures_curves" / "learning_curves_split_mnist.png").read_bytes()[:4] == b"\x89PNG"


_TFDS_REASON = (
    "needs a TFDS data set prepared by TensorFlow (not installed: the `tfds` extra is a 274 MB wheel) "
    "and the network; the check runs the command itself on the slice and demands the documented "
    "one-paragraph failure (`... Nothing was trained.`), no traceback"
)

EXCLUDED: dict[str, Excluded] = {
    # --- set-up and the test suite itself: CI runs them -----------------------------------
    "make setup && .venv/bin/python -m cl_sweep activation=hard_ash optimizer=adagrad": Excluded(
        "`make setup` creates .venv and pip-installs from the network into the venv every test uses "
        "(CI runs it); the training half is the 'Training one job' command, run by its own parameter",
        "make -n setup", expect=r"pip install"),
    "make setup": Excluded("creates .venv and pip-installs from the network (CI runs it)",
                           "make -n setup", expect=r"pip install"),
    "make test": Excluded("the whole test suite, this file included (CI runs it)",
                          "make -n test", expect=r"pytest"),
    "make test-fast": Excluded("the test suite minus the slow tests, this file included",
                               "make -n test-fast", expect=r"pytest .*not slow"),
    # --- installs -------------------------------------------------------------------------
    "pip install -e '.[cuda,cluster]'": Excluded(
        "downloads the CUDA 12 jax wheels into the venv shared by every test; the check: both extras "
        "are declared, and the SLURM launcher they bring is importable",
        _pyproject_extras("cuda", "cluster") + " && .venv/bin/python -c 'import hydra_plugins.hydra_submitit_launcher'"),
    "pip install -e '.[cuda]'": Excluded("downloads the CUDA 12 jax wheels into the shared venv; the check: the extra is declared",
                                         _pyproject_extras("cuda")),
    ".venv/bin/pip install -e '.[tfds]'": Excluded(
        "downloads TensorFlow (274 MB) into the shared venv; the check: the extra is declared", _pyproject_extras("tfds")),
    # --- hours, or the checkout's stored results ---------------------------------------------
    "python -m cl_sweep --multirun +sweep=a6 activation=hard_ash,ash,topk_subtract,relu optimizer=adagrad "
    "benchmark.validation_fraction=0.1 progress=false hydra.sweep.dir=results/a6_validation": Excluded(
        "half an hour of training, written into the checkout's results/a6_validation; the check: the same sweep as "
        "a dry run into a scratch folder",
        "python -m cl_sweep --multirun +sweep=a6 activation=hard_ash,ash,topk_subtract,relu optimizer=adagrad "
        "benchmark.validation_fraction=0.1 progress=false hydra.sweep.dir=$PWD/validation_check hydra.sweeper.dry_run=true",
        expect=r"54 jobs \(dry run"),
    "make search": Excluded("about an hour of training, written into the checkout's results/search; the check: the recipe",
                            "make -n search", expect=r"(?s)\+search=a6_wide activation=\$act optimizer=\$opt.*results/search"),
    "make reproduce": Excluded("hours of training, written into the checkout's results/a6",
                               "make -n reproduce", expect=r"\+sweep=a6"),
    "git clone -q . /tmp/frozen && PYTHONPATH=/tmp/frozen/src .venv/bin/python -m cl_sweep --multirun "
    "+sweep=a6 activation=hard_ash optimizer=rmsprop progress=false hydra.sweep.dir=$PWD/results/a6": Excluded(
        "clones into the fixed /tmp/frozen (fails when it exists; the machine is shared) and trains into "
        "the checkout's results/a6; the check clones into the scratch folder, shows the copy's package is "
        "the one imported, and dry-runs the sweep from it",
        "git clone -q {repo} frozen && PYTHONPATH=$PWD/frozen/src .venv/bin/python -c 'import cl_sweep; print(cl_sweep.__file__)' "
        "&& PYTHONPATH=$PWD/frozen/src .venv/bin/python -m cl_sweep --multirun +sweep=a6 activation=hard_ash optimizer=rmsprop "
        "progress=false hydra.sweep.dir=$PWD/frozen_results/a6 hydra.sweeper.dry_run=true",
        expect=r"(?s)/frozen/src/cl_sweep/__init__\.py.*\d+ jobs \(dry run", slow=True),
    # --- no SLURM, no GPU, no PostgreSQL of our own ------------------------------------------
    "python -m cl_sweep --multirun +sweep=a6 activation=hard_ash optimizer=rmsprop hydra/launcher=slurm_gpu "
    "hydra.launcher.partition=gpu": Excluded(
        "no SLURM here; the check: its config composes with the submitit SLURM launcher and partition=gpu, "
        "and the grid sweeper's dry run instantiates that launcher and lists the jobs",
        "python -m cl_sweep --cfg hydra +sweep=a6 activation=hard_ash optimizer=rmsprop hydra/launcher=slurm_gpu "
        "hydra.launcher.partition=gpu | grep -E 'SlurmLauncher|partition: gpu' && python -m cl_sweep --multirun "
        "+sweep=a6 activation=hard_ash optimizer=rmsprop hydra/launcher=slurm_gpu hydra.launcher.partition=gpu "
        "hydra.sweeper.dry_run=true",
        expect=r"(?s)SlurmLauncher.*partition: gpu.*\d+ jobs \(dry run"),
    # --- sharded population sweeps: tests/test_sharded.py runs them as written, with the slice ---------
    "python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad hydra/launcher=population_submitit_local "
    "hydra.launcher.shards=2": Excluded(
        "run as written (with the slice and a sweep folder) by tests/test_sharded.py::"
        "test_two_local_shards_match_the_population_launcher_and_resume_after_sigkill, which also kills a shard, "
        "resumes and compares every number with `population`'s; the check: the grid it launches",
        "python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad hydra/launcher=population_submitit_local "
        "hydra.launcher.shards=2 hydra.sweeper.dry_run=true", expect=r"6 jobs \(dry run"),
    "python -m cl_sweep --multirun +sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' hydra/launcher=population_slurm "
    "hydra.launcher.shards=8 hydra.launcher.partition=gpu": Excluded(
        "no SLURM here (tests/test_sharded.py submits the launcher's array to a fake sbatch and checks the script); "
        "the check: the config composes to the sharded submitit launcher with 8 shards on partition gpu, and the "
        "grid sweeper's dry run lists the whole grid",
        "python -m cl_sweep --cfg hydra +sweep=a6 hydra/launcher=population_slurm hydra.launcher.shards=8 "
        "hydra.launcher.partition=gpu | grep -E 'SubmititShardedLauncher|shards: 8|partition: gpu' && python -m cl_sweep "
        "--multirun +sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' hydra/launcher=population_slurm hydra.launcher.shards=8 "
        "hydra.launcher.partition=gpu hydra.sweeper.dry_run=true",
        expect=r"(?s)shards: 8.*SubmititShardedLauncher.*partition: gpu.*1943 jobs \(dry run"),
    "pip install -e '.[ray]'": Excluded(
        "pip-installs into the venv every test shares (`.[dev]` already holds Ray); the check: the extra is declared "
        "and Ray imports", _pyproject_extras("ray") + " && .venv/bin/python -c 'import ray; print(ray.__version__)'"),
    "ray start --head --num-cpus=2": Excluded(
        "starts Ray daemons that outlive the command; tests/test_sharded.py's ray_head fixture starts this head "
        "(with --block, its own port and temp folder) and stops its process group; the check: the CLI",
        ".venv/bin/ray start --help", expect=r"--head"),
    "python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad hydra/launcher=population_ray "
    "hydra.launcher.shards=2": Excluded(
        "needs the Ray head of the line before; run as written (with the slice and a sweep folder) on a head of its "
        "own by tests/test_sharded.py::test_ray_shards_on_a_local_head_match_the_population_launcher; the check: "
        "the grid it launches",
        "python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad hydra/launcher=population_ray "
        "hydra.launcher.shards=2 hydra.sweeper.dry_run=true", expect=r"6 jobs \(dry run"),
    "python benchmarks/shards_time.py --rounds 2": Excluded(
        "4 sweeps of 6 jobs on 1000 examples per task, minutes; each is the README's submitit command, which "
        "tests/test_sharded.py runs; the check: the script's --help",
        ".venv/bin/python benchmarks/shards_time.py --help", expect=r"--rounds"),
    "bash benchmarks/gpu_check.sh": Excluded("needs a GPU machine and runs the whole A.6 grid there; the check: the script parses",
                                             "bash -n benchmarks/gpu_check.sh"),
    "bash benchmarks/gpu_carry.sh": Excluded("downloads wheels for the GPU bundle from the network; the check: the script parses",
                                             "bash -n benchmarks/gpu_carry.sh"),
    "make postgres": Excluded(
        "starts a server on the fixed port 55432 that every test run on this machine shares (and installs "
        "Debian's postgresql as root if missing); `make test` starts it. The check: the recipe and the script",
        "make -n postgres && bash -n scripts/postgres.sh", expect=r"scripts/postgres\.sh start"),
    "make postgres-stop": Excluded("would stop the server other test runs on this machine use",
                                   "make -n postgres-stop", expect=r"scripts/postgres\.sh stop"),
    # --- benchmarks: minutes of both cores --------------------------------------------------------
    "make dashboard": Excluded("serves until stopped; the check: the recipe", "make -n dashboard",
                               expect=r"optuna-dashboard \"sqlite:///.*multirun/optuna\.sqlite3\" --host 127\.0\.0\.1 --port 8080"),
    "make dashboard STORAGE=sqlite:///grid.db": Excluded(
        "serves until stopped (tests/test_dashboard.py starts the real server on a free loopback port and reads "
        "the exported studies through its HTTP API); the check: the recipe",
        "make -n dashboard STORAGE=sqlite:///grid.db", expect=r"optuna-dashboard \"sqlite:///grid\.db\" --host 127\.0\.0\.1"),
    "make bench": Excluded("about 15 minutes of both cores (the next four); the check: the recipe",
                           "make -n bench", expect=r"(?s)job_vs_floor\.py.*step_time\.py --ablation --optimizers.*ops_bench\.py.*grid_time\.py"),
    ".venv/bin/python benchmarks/job_vs_floor.py": Excluded(
        "3 rounds of the default job and the floor job as processes, about 3 minutes here; the check: 1 round on 64 "
        "examples per task, scored on 100 test examples per task",
        ".venv/bin/python benchmarks/job_vs_floor.py --rounds 1 --limit-per-task 64 --test-limit-per-task 100",
        expect=r"target 1 of #16 \(<= 1\.5\): default job / floor job, end to end = [0-9.]+", slow=True),
    ".venv/bin/python benchmarks/grad_sparsity.py": Excluded(
        "six activations trained through Split-MNIST, about a minute here; the check: two of them on 128 examples per task",
        ".venv/bin/python benchmarks/grad_sparsity.py --activations hard_ash,lwta --limit-per-task 128",
        expect=r"(?s)hard_ash +5 +1000\.0.*lwta +5 +50\.0.*lwta: the weight gradient, ms per call.*largest relative differences", slow=True),
    ".venv/bin/python benchmarks/step_time.py --ablation": Excluded(
        "7 minutes here under load; the check: the same script and flag on 8 steps, 1 round, population 2, with "
        "--optimizers too, one run shared with the next entry (each compiles some twenty programs)",
        ".venv/bin/python benchmarks/step_time.py --ablation --optimizers --steps 8 --repeats 1 --populations 2",
        expect=r"(?s)without update clip.*with all four swapped.*resolution: the default program timed as two variants",
        slow=True, shared=True),
    ".venv/bin/python benchmarks/step_time.py --ablation --optimizers --populations 2 --repeats 11 --steps 384": Excluded(
        "eleven minutes of both cores; the check: the same script and flags on 8 steps, 1 round (the plain-XLA "
        "rows appear only where this machine's kernel proof passes, so the check does not ask for them)",
        ".venv/bin/python benchmarks/step_time.py --ablation --optimizers --steps 8 --repeats 1 --populations 2",
        expect=r"(?s)every timed model's weights stayed finite.*with all four swapped.*hard_ash\+adam +2 .*"
               r"resolution: the default program timed as two variants.*resolution, second control: Hard ASH \+ SGD.*"
               r"target 2 of #16 \(<= 1\.15\).*"
               r"target 3 of #16, projected: .* at the floor loop's step \(same evaluations\): [0-9.]+ h", slow=True, shared=True),
    ".venv/bin/python benchmarks/step_time.py --ablation --optimizers --populations 2 --repeats 7 --steps 384": Excluded(
        "five minutes of both cores; the check: the same script and flags on 8 steps, 1 round, with the sparse "
        "rows (they appear only where this machine's sparse-variant proof passes, so the check asks only for "
        "the target lines every run prints)",
        ".venv/bin/python benchmarks/step_time.py --ablation --optimizers --steps 8 --repeats 1 --populations 2",
        expect=r"(?s)every timed model's weights stayed finite.*topk_subtract\+adagrad +2 .*with all four swapped.*"
               r"target 2 of #16 \(<= 1\.15\).*target 3 of #16, projected: .* h", slow=True, shared=True),
    ".venv/bin/python benchmarks/grid_time.py": Excluded(
        "49 five-seed jobs end to end, several minutes; the check: one job of the Hard ASH + RMSprop slice",
        ".venv/bin/python benchmarks/grid_time.py --slice hard_ash_rmsprop --stride 150 --reference-steps 5",
        expect=r"per model", slow=True),
    ".venv/bin/python benchmarks/optuna_batch.py --rounds 2": Excluded(
        "32 full-data trials, about 4 minutes here; the check: the same script on 2 trials of 64 examples per task",
        ".venv/bin/python benchmarks/optuna_batch.py --trials 2 --n-jobs 2 --limit-per-task 64",
        expect=r"trials/hour", slow=True),
    ".venv/bin/python benchmarks/optuna_batch.py": Excluded(
        "16 full-data trials, about 2 minutes here; the check: the script's --help",
        ".venv/bin/python benchmarks/optuna_batch.py --help", expect=r"--n-jobs"),
    ".venv/bin/python benchmarks/grid_time.py --whole-grid": Excluded(
        "the whole A.6 grid (hours on this CPU); the check: the script's --help", ".venv/bin/python benchmarks/grid_time.py --help",
        expect=r"--whole-grid"),
    ".venv/bin/python benchmarks/per_call.py --rounds 3": Excluded(
        "20 full-data models per round and a warm-up, about 5 minutes here; the check: 1 round on 64 examples per "
        "task, scored on 100 test examples per task",
        ".venv/bin/python benchmarks/per_call.py --rounds 1 --limit-per-task 64 --test-limit-per-task 100",
        expect=r"one job per call / both in one call: [0-9.]+; every model's numbers identical both ways", slow=True),
    ".venv/bin/python benchmarks/collect_time.py": Excluded(
        "collects the whole A.6 grid twice per round into copies of results/a6, a minute or two here; the check: the script's --help",
        ".venv/bin/python benchmarks/collect_time.py --help", expect=r"--rounds"),
    "cp -r results/a6 /tmp/a6_copy && time python -m cl_sweep --multirun +sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' "
    "progress=false hydra.sweep.dir=/tmp/a6_copy": Excluded(
        "copies into the fixed /tmp/a6_copy (the machine is shared); tests/test_sweeps.py::"
        "test_resuming_stored_results_trains_and_rewrites_nothing resumes a slice of it. The check: the same resume of "
        "ReLU's 67 stored jobs, copied into the scratch folder",
        "mkdir -p a6_copy/split_mnist && cp -r results/a6/split_mnist/relu a6_copy/split_mnist/ && time python -m cl_sweep "
        "--multirun +sweep=a6 activation=relu 'optimizer=glob(*)' progress=false hydra.sweep.dir=$PWD/a6_copy",
        expect=r"67 of 67 jobs already complete, not re-run", slow=True),
    ".venv/bin/python benchmarks/logger_cost.py --rounds 3 --limit-per-task 1000": Excluded(
        "17 whole 5-seed jobs (5 loggers x 3 rounds and 2 untimed), 5 to 40 minutes; the check: the same script "
        "on 64 examples per task, 1 seed, 1 round, logger=none against csv",
        ".venv/bin/python benchmarks/logger_cost.py --rounds 1 --limit-per-task 64 --seeds 1 --loggers csv",
        expect=r"(?s)logger=csv.*overhead", slow=True),
    "benchmarks/step_time.py --populations 2 --repeats 3": Excluded(
        "the quiet before/after comparison of Tracking (four runs of both cores, minutes); the check: its --help",
        ".venv/bin/python benchmarks/step_time.py --help", expect=r"--repeats"),
    ".venv/bin/python benchmarks/step_time.py --populations 1,2": Excluded(
        "minutes of both cores (its --ablation form runs on 8 steps above); the check: its --help",
        ".venv/bin/python benchmarks/step_time.py --help", expect=r"--populations"),
    "bash scripts/screenshot_tracking.sh": Excluded(
        "needs Chromium (Debian's, as root) and a second venv with the full mlflow and playwright from the network, "
        "then trains a sweep and serves MLflow's UI (about 5 minutes); the check: the script parses",
        "bash -n scripts/screenshot_tracking.sh"),
    "make soak JOBS=240": Excluded("240 jobs, about 6 minutes of both cores; the check: the same recipe with 2 jobs",
                                   "make soak JOBS=2", expect=r"soak: OK", slow=True),
    "make soak": Excluded("240 jobs, about 6 minutes; the check: the recipe", "make -n soak", expect=r"soak\.py --jobs 240"),
    ".venv/bin/python benchmarks/soak.py --jobs 240": Excluded("= `make soak`, 240 jobs; the check: the script's --help",
                                                               ".venv/bin/python benchmarks/soak.py --help", expect=r"--jobs"),
    "make bench-launchers": Excluded("2 rounds of an 8-job sweep through two launchers, minutes; the check: the recipe",
                                     "make -n bench-launchers", expect=r"soak\.py --compare-launchers"),
    # --- TensorFlow ----------------------------------------------------------------------------
    "python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=kmnist benchmark.num_tasks=5 "
    "benchmark.classes_per_task=2": Excluded(
        _TFDS_REASON,
        "python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=kmnist benchmark.num_tasks=5 "
        "benchmark.classes_per_task=2 {slice}", expect=r"Nothing was trained", fails=True),
    "python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=emnist/letters benchmark.num_tasks=13 "
    "benchmark.classes_per_task=2 benchmark.tfds_data_dir=/data/tfds": Excluded(
        _TFDS_REASON,
        "python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=emnist/letters benchmark.num_tasks=13 "
        "benchmark.classes_per_task=2 benchmark.tfds_data_dir=/data/tfds {slice}", expect=r"Nothing was trained", fails=True),
    "python -m cl_sweep --multirun benchmark=split_tfds benchmark.tfds_name=mnist,fashion_mnist "
    "benchmark.tfds_data_dir=/tmp/tfds_data activation=hard_ash,relu optimizer=adagrad,adam": Excluded(
        "needs /tmp/tfds_data prepared by `scripts/tfds_offline.py` (TensorFlow); the check runs it on the "
        "slice and demands the documented one-paragraph failure, no traceback",
        "python -m cl_sweep --multirun benchmark=split_tfds benchmark.tfds_name=mnist,fashion_mnist "
        "benchmark.tfds_data_dir=/tmp/tfds_data activation=hard_ash,relu optimizer=adagrad,adam {slice}",
        expect=r"Nothing was trained", fails=True),
    ".venv/bin/python scripts/tfds_offline.py mnist fashion_mnist --data-dir /tmp/tfds_data": Excluded(
        "needs TensorFlow (the `tfds` extra); the check: the script's --help",
        ".venv/bin/python scripts/tfds_offline.py --help", expect=r"--data-dir"),
    ".venv/bin/python scripts/tfds_offline.py mnist fashion_mnist --data-dir DIR": Excluded(
        "placeholder DIR, and needs TensorFlow; the check: the script's --help",
        ".venv/bin/python scripts/tfds_offline.py --help", expect=r"--data-dir"),
    ".venv/bin/python scripts/rerun_stored.py --per-activation 2": Excluded(
        "18 stored jobs, about 6 minutes here; the check: the same script and flag on one stored job",
        ".venv/bin/python scripts/rerun_stored.py results/a6/split_mnist/relu/sgd/optimizer.learning_rate=0.0003/result.json "
        "--per-activation 2",
        expect=r"of [0-9]+ jobs re-ran to the stored final accuracies bit for bit; largest difference of a seed's final "
               r"accuracy: [0-9.]+ points", slow=True),
    ".venv/bin/python scripts/rerun_stored.py": Excluded(
        "9 five-seed or early-stopped jobs, 1.5 minutes; the check: the same script on one stored job",
        ".venv/bin/python scripts/rerun_stored.py results/a6/split_mnist/relu/sgd",
        expect=r"1 jobs re-ran to the stored final accuracies|of 1 jobs re-ran", slow=True),
    # --- your own components -------------------------------------------------------------------
    "pip install -e examples/plugin": Excluded(
        "installs the example plugin into the venv every test shares (its entry point would then load in every "
        "test); tests/test_example_plugin.py pip-installs it into a folder of its own and sweeps it. The check: "
        "the package declares its cl_sweep.plugins entry point",
        "grep -A1 'entry-points.\"cl_sweep.plugins\"' examples/plugin/pyproject.toml", expect=r"example = \"cl_sweep_example_plugin\""),
    # --- a command that reads the output of the one before it ------------------------------------
    HONEST_TABLES: Excluded(
        "reads the validation sweep of the line above it in the README (the stored results, which a table command "
        "is otherwise given, have no validation accuracy and are refused); the check runs that sweep on the slice "
        "and then this command as written", _honest_selection, slow=True),
    CURVES_FIGURES: Excluded(
        "reads the learning-curve run of the line above it in the README (the stored results have no curves); "
        "the check runs that run on the slice and then this command as written", _learning_curves, slow=True),
    # --- usage synopses in the prose (placeholders) ------------------------------------------------
    "python -m cl_sweep <overrides>": Excluded(
        "synopsis: <overrides> stands for a result's `overrides`; the check re-runs a stored result's overrides",
        _rerun_stored_overrides, slow=True),
    "python -m cl_sweep.analysis.figures [RESULTS ...] --out figures": Excluded(
        "synopsis of the figures CLI (`make figures` runs it for real); the check: its --help",
        "python -m cl_sweep.analysis.figures --help", expect=r"--out"),
    "python -m cl_sweep.analysis.tables <its folder>": Excluded(
        "synopsis: <its folder> is the H100 run's folder, not stored; the check: the tables CLI's --help",
        "python -m cl_sweep.analysis.tables --help", expect=r"--out"),
    "python -m cl_sweep --multirun +sweep=a6 activation=<rows> optimizer=<column> progress=false "
    "hydra.sweep.dir=results/a6": Excluded(
        "synopsis of `make reproduce`'s loop body (hours, into the checkout's results/a6); the check: one "
        "column of it as a dry run",
        "python -m cl_sweep --multirun +sweep=a6 activation=hard_ash,ash optimizer=adagrad progress=false "
        "hydra.sweep.dir=$PWD/reproduce_check hydra.sweeper.dry_run=true", expect=r"\d+ jobs \(dry run"),
    "python -m cl_sweep --multirun +sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' progress=false "
    "hydra.sweep.dir=DIR": Excluded(
        "placeholder DIR (the measured whole-grid run's folder); the same sweep without it runs on the slice as "
        "its own parameter; the check: this one as a dry run into a scratch DIR",
        "python -m cl_sweep --multirun +sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' progress=false "
        "hydra.sweep.dir=$PWD/DIR hydra.sweeper.dry_run=true", expect=r"\d+ jobs \(dry run"),
    "python -m cl_sweep --multirun +sweep=a6 ...": Excluded(
        "synopsis of the sweep `benchmarks/grid_time.py` runs (its own parameter checks that script)"),
}


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def command_env() -> dict:
    env = dict(os.environ)
    for key in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONHOME"):
        env.pop(key, None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_workdir(tmp_path: Path) -> Path:
    """A scratch folder that looks like the checkout but keeps every output of its own."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name in OUTPUT_DIRS or entry.name == ".git" or (entry.name.startswith(".") and entry.name != ".venv"):
            continue
        if entry.name in {"__pycache__", "build", "dist"}:
            continue
        (work / entry.name).symlink_to(entry)
    return work


def run_bash(cmd: str, workdir: Path, env: dict, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", cmd], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


def assert_ran(proc: subprocess.CompletedProcess, cmd: str) -> None:
    out = output_of(proc)
    assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{tail(out)}"
    assert "Traceback" not in out, f"`{cmd}` printed a traceback:\n{tail(out)}"


def result_files(root: Path) -> list[Path]:
    from cl_sweep.results import find_result_files, read_result

    files = list(find_result_files(root)) if root.exists() else []
    for f in files:
        read_result(f)  # raises ResultError naming the file and what is wrong with it
    return files


ENTRY = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?python3?\s+-m\s+cl_sweep(?:\s|$)")


def last_program(cmd: str) -> str:
    return re.split(r"&&|\|\||;|\|", cmd)[-1].strip()


def is_training(cmd: str) -> bool:
    last = last_program(cmd)
    return bool(ENTRY.search(" " + last)) and not re.search(r"\s--(cfg|help|info|shell-completion)\b|\s-c\s", last)


def is_multirun(cmd: str) -> bool:
    return bool(re.search(r"(?:^|\s)(--multirun|-m)(?:\s|$)", last_program(cmd).split("cl_sweep", 1)[-1]))


def is_grid(cmd: str) -> bool:
    return is_multirun(cmd) and bool(re.search(r"(?:^|\s)\+sweep=|hydra/sweeper=grid\b", cmd))


def is_optuna(cmd: str) -> bool:
    """An Optuna sweep: named on the command line, or a `+search=` preset (each selects the Optuna sweeper)."""
    return is_multirun(cmd) and ("hydra/sweeper=optuna" in cmd or bool(re.search(r"(?:^|\s)'?\+search=", cmd)))


def sweep_presets(cmd: str) -> list[str]:
    return re.findall(r"(?:^|\s)'?\+sweep=([\w.]+)", cmd)


def preset_text(name: str, seen: set | None = None) -> str:
    """A sweep preset's YAML and the YAML of the sweep presets it lists in its defaults."""
    seen = seen if seen is not None else set()
    path = REPO / "conf" / "sweep" / f"{name}.yaml"
    if name in seen or not path.exists():
        return ""
    seen.add(name)
    text = path.read_text()
    for parent in re.findall(r"^\s*-\s*([\w]+)\s*$", text, re.M):
        text += preset_text(parent, seen)
    return text


def is_permuted(cmd: str) -> bool:
    if re.search(r"(?:^|\s)benchmark=permuted_mnist\b", cmd):
        return True
    return any(re.search(r"/benchmark:\s*permuted_mnist\b", preset_text(p)) for p in sweep_presets(cmd))


def named_dir(cmd: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){re.escape(key)}=(\S+)", cmd)
    return m.group(1) if m else None


def seed_results(folder: Path, n: int = 3) -> None:
    """Copies a few stored results into a folder a table command reads (as a sweep would have left them)."""
    from cl_sweep.results import find_result_files

    src_root = REPO / "results" / "a6"
    for f in list(find_result_files(src_root / "split_mnist" / "hard_ash" / "adagrad"))[:n]:
        target = folder / f.parent.relative_to(src_root)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target / f.name)


def seed_inputs(cmd: str, workdir: Path) -> None:
    """Result folders a table/figure command names that a documented sweep would have written."""
    folders: list[str] = []
    for m in re.finditer(r"(?:^|\s)make\s+(?:tables|figures)\b(.*)", cmd):
        r = named_dir(m.group(1), "RESULTS")
        if r:
            folders.append(r)
    m = re.search(r"python3?\s+-m\s+cl_sweep\.analysis\.(?:tables|figures)\s+(.*)", cmd)
    if m:
        for token in shlex.split(m.group(1)):
            if token.startswith("-"):
                break
            folders.append(token)
    for name in folders:
        path = workdir / name
        if not path.exists() and not Path(name).is_absolute():
            seed_results(path)


def expected_outputs(cmd: str, workdir: Path) -> None:
    """Table and figure commands must leave their files behind."""
    last = last_program(cmd)
    if m := re.search(r"--to-study\s+sqlite:///(\S+)", last):  # studies instead of tables: a study per cell
        import optuna

        path = Path(m.group(1)) if Path(m.group(1)).is_absolute() else workdir / m.group(1)
        names = optuna.get_all_study_names(f"sqlite:///{path}")
        assert names and all(n.startswith("grid|") for n in names), f"`{cmd}` wrote no grid study into {path}"
        return
    if re.match(r"make\s+tables\b", last) or re.search(r"-m\s+cl_sweep\.analysis\.tables\s", last):
        out = named_dir(last.replace("--out ", "--out="), "--out") or "tables"
        assert list((workdir / out).rglob("*.md")), f"`{cmd}` wrote no Markdown table under {out}/"
    if re.match(r"make\s+figures\b", last) or re.search(r"-m\s+cl_sweep\.analysis\.figures\s", last):
        out = named_dir(last.replace("--out ", "--out="), "--out") or "figures"
        assert list((workdir / out).rglob("*.png")), f"`{cmd}` wrote no figure under {out}/"


def basic_sweep_jobs(cmd: str) -> int:
    """Jobs of Hydra's basic sweeper: the product of the comma lists (`seed=0,5,10 k=64,96`: 6)."""
    n = 1
    for token in shlex.split(last_program(cmd).split("cl_sweep", 1)[-1]):
        key, eq, value = token.partition("=")
        if eq and "," in value and not re.search(r"[(\[{]", value):
            n *= len(value.split(","))
    return n


def grid_job_count(cmd: str, workdir: Path, env: dict) -> int:
    dry = f"{cmd} {' '.join(SLICE)} hydra.sweeper.dry_run=true"
    proc = run_bash(dry, workdir, env)
    assert_ran(proc, dry)
    m = re.search(r"(\d+) jobs \(dry run", output_of(proc))
    assert m, f"`{dry}` did not print its job count:\n{tail(output_of(proc))}"
    return int(m.group(1))


def run_documented(command: Command, workdir: Path, env: dict) -> None:
    cmd = command.text
    shows_error = bool(command.output) and command.output[0].startswith("cl_sweep: ")
    if shows_error:
        proc = run_bash(cmd, workdir, env)
        out = output_of(proc)
        assert proc.returncode != 0, f"`{cmd}` should fail as the README shows, but exited 0:\n{tail(out)}"
        assert "Traceback" not in out, f"`{cmd}` printed a traceback:\n{tail(out)}"
        flat = " ".join(out.split())
        for line in command.output:
            assert " ".join(line.split()) in flat, f"`{cmd}`: the README shows\n{line}\nbut it printed:\n{tail(out)}"
        assert not result_files(workdir), f"`{cmd}` failed but wrote a result"
        return

    seed_inputs(cmd, workdir)
    extra: list[str] = []
    expected_jobs: int | None = None
    if is_training(cmd):
        extra += SLICE
        if is_permuted(cmd):
            extra += PERMUTED_SLICE
        if is_grid(cmd):
            n = grid_job_count(cmd + (" " + " ".join(PERMUTED_SLICE) if is_permuted(cmd) else ""), workdir, env)
            stride = 1 if n <= GRID_MAX_JOBS else math.ceil(n / GRID_MAX_JOBS)
            if stride > 1:
                extra.append(f"hydra.sweeper.stride={stride}")
            expected_jobs = len(range(0, n, stride))
        if is_optuna(cmd):
            extra += OPTUNA_SLICE
            expected_jobs = 1
        elif is_multirun(cmd) and not is_grid(cmd):
            expected_jobs = basic_sweep_jobs(cmd)
        elif not is_multirun(cmd):
            expected_jobs = 1
    full = " ".join([cmd, *extra])
    proc = run_bash(full, workdir, env)
    assert_ran(proc, full)
    expected_outputs(cmd, workdir)
    if not is_training(cmd):
        return
    last = last_program(cmd)
    if is_multirun(cmd):
        where = named_dir(last, "hydra.sweep.dir") or "multirun"
    else:
        where = named_dir(last, "hydra.run.dir") or "outputs"
    where = where.replace("$PWD", str(workdir))
    results = result_files(workdir / where)
    if expected_jobs is not None:
        assert len(results) == expected_jobs, (
            f"`{full}`: {expected_jobs} jobs should have written {expected_jobs} result.json under {where}/, "
            f"found {len(results)}:\n{tail(output_of(proc))}")
    else:
        assert results, f"`{full}` wrote no result.json under {where}/:\n{tail(output_of(proc))}"
    tracked_runs(last, workdir, results)


def tracked_runs(cmd: str, workdir: Path, results: list[Path]) -> None:
    """A command with ``logger=`` leaves one run per (job, seed) in each tracker, where its keys put them."""
    import sqlite3

    from cl_sweep.results import read_result

    keys = dict(t.split("=", 1) for t in shlex.split(cmd) if "=" in t and not t.startswith("-"))
    name = keys.get("logger", "none")
    chosen = keys["logger.loggers"].strip("[]").split(",") if name == "many" else [] if name == "none" else [name]
    runs = sum(len(read_result(f)["seeds"]) for f in results)
    for tracker in chosen:
        prefix = f"logger.{tracker}." if name == "many" else "logger."
        own = {k[len(prefix):]: v for k, v in keys.items() if k.startswith(prefix)}
        if tracker in ("csv", "tensorboard"):
            roots = [workdir / own["save_dir"]] if "save_dir" in own else [f.parent / tracker for f in results]
            found = sum(len([d for d in root.rglob("seed_*") if d.is_dir()]) for root in roots)
        elif tracker == "mlflow":
            with sqlite3.connect(workdir / own["tracking_uri"].removeprefix("sqlite:///")) as db:
                found = db.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]
        elif tracker == "wandb":
            found = len(list((workdir / own.get("dir", ".") / "wandb").glob("offline-run-*")))
        else:
            raise AssertionError(f"`{cmd}`: no read-back here for logger {tracker}: add one to tracked_runs")
        assert found == runs, f"`{cmd}`: logger {tracker} left {found} runs, not one per (job, seed): {runs}"


_SHARED_RUNS: dict[str, tuple[int, str]] = {}  # check line -> (exit status, output) of Excluded(shared=True) checks


def run_check(cmd: str, spec: Excluded, workdir: Path, env: dict) -> None:
    if spec.check is None:
        return
    if callable(spec.check):
        spec.check(workdir, env)
        return
    check = spec.check.replace("{repo}", shlex.quote(str(REPO))).replace("{slice}", " ".join(SLICE))
    if spec.shared and check in _SHARED_RUNS:
        returncode, out = _SHARED_RUNS[check]
    else:
        proc = run_bash(check, workdir, env)
        returncode, out = proc.returncode, output_of(proc)
        if spec.shared:
            _SHARED_RUNS[check] = (returncode, out)
    if spec.fails:
        assert returncode != 0, f"check `{check}` of `{cmd}` should fail cleanly, but exited 0:\n{tail(out)}"
    else:
        assert returncode == 0, f"check `{check}` of `{cmd}` exited {returncode}:\n{tail(out)}"
    assert "Traceback" not in out, f"check `{check}` of `{cmd}` printed a traceback:\n{tail(out)}"
    if spec.expect:
        assert re.search(spec.expect, out), f"check `{check}` of `{cmd}`: no match for {spec.expect!r} in:\n{tail(out)}"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _is_fast(c: Command) -> bool:
    if c.text in EXCLUDED:
        return not EXCLUDED[c.text].slow
    if is_placeholder(c.text):
        return True
    if c.output and c.output[0].startswith("cl_sweep: "):
        return True
    return bool(re.fullmatch(r"make (help|-n \S+)", c.text))


def _id(c: Command) -> str:
    return c.text if len(c.text) <= 110 else c.text[:100] + f"...[{hashlib.sha1(c.text.encode()).hexdigest()[:6]}]"


def _params():
    ids: dict[str, int] = {}
    for c in COMMANDS:
        ident = _id(c)
        ids[ident] = ids.get(ident, 0) + 1
        if ids[ident] > 1:
            ident += f"#{ids[ident]}"
        yield pytest.param(c, id=ident, marks=() if _is_fast(c) else pytest.mark.slow)


@pytest.mark.parametrize("command", list(_params()))
def test_readme_command(command: Command, tmp_path: Path) -> None:
    where = f"README.md line {', '.join(map(str, command.lines))}"
    workdir = make_workdir(tmp_path)
    env = command_env()
    if command.text in EXCLUDED:
        spec = EXCLUDED[command.text]
        assert spec.reason.strip(), f"{where}: the exclusion of `{command.text}` needs a reason"
        run_check(command.text, spec, workdir, env)
        return
    if "plugins=[my_components]" in command.text or "--plugins my_components" in command.text:
        # the README's instruction: my_components.py (examples/my_components.py is the README's copy) in the working directory
        shutil.copy(REPO / "examples" / "my_components.py", workdir / "my_components.py")
    if is_placeholder(command.text):
        pytest.fail(
            f"{where}: `{command.text}` has a placeholder ({PLACEHOLDER.search(command.text).group(0).strip()!r}), "
            "so it cannot be run as written: show a complete command in the README, or give it a reason in EXCLUDED")
    run_documented(command, workdir, env)


def test_exclusions_are_in_the_readme() -> None:
    documented = {c.text for c in COMMANDS}
    stale = [cmd for cmd in EXCLUDED if cmd not in documented]
    assert not stale, "EXCLUDED lists commands the README no longer shows (remove them):\n" + "\n".join(stale)


def test_the_readme_has_commands() -> None:
    texts = [c.text for c in COMMANDS]
    assert ".venv/bin/python -m cl_sweep activation=hard_ash optimizer=adagrad" in texts
    assert sum(is_training(t) for t in texts) >= 10, texts


def test_parsing_rules() -> None:
    md = "\n".join([
        "Run `python -m cl_sweep seed=1` or `make help`; `n_seeds=3` and `benchmarks/grid_time.py` are not commands,",
        "nor is `grid_time.py --stride 2`, but `benchmarks/soak.py --jobs 4` and `python -m cl_sweep.analysis.tables",
        "results --out t` are.",
        "```bash",
        "python -m cl_sweep --multirun +sweep=a6 \\",
        "    activation=relu   # 3 jobs",
        "make tables RESULTS=\"a # b\"  # a comment",
        "# a comment line",
        "```",
        "```",
        "$ python -m cl_sweep activation=hardash",
        "cl_sweep: invalid configuration: ...",
        "```",
        "```",
        "split_mnist  activation=hard_ash",
        "```",
        "```bash",
        "python -m cl_sweep seed=1",
        "```",
    ])
    got = {c.text: c for c in readme_commands(md)}
    assert list(got) == [
        "python -m cl_sweep seed=1", "make help", "benchmarks/soak.py --jobs 4", "python -m cl_sweep.analysis.tables results --out t",
        "python -m cl_sweep --multirun +sweep=a6 activation=relu", 'make tables RESULTS="a # b"',
        "python -m cl_sweep activation=hardash",
    ]
    assert got["python -m cl_sweep seed=1"].lines == [1, 18]
    assert got["python -m cl_sweep activation=hardash"].output == ("cl_sweep: invalid configuration: ...",)
    assert is_placeholder("python -m cl_sweep --multirun ... x") and is_placeholder("a <rows> b")
    assert is_placeholder("x --data-dir DIR") and is_placeholder("add n=N")
    assert not is_placeholder("make soak JOBS=240") and not is_placeholder('make reproduce OPTIMIZERS="adagrad sgd"')
    assert is_grid("python -m cl_sweep --multirun +sweep=a6 x=1") and not is_grid("python -m cl_sweep +sweep=a6")
    assert is_optuna("python -m cl_sweep --multirun hydra/sweeper=optuna +search=a6")
    assert is_optuna("python -m cl_sweep --multirun +search=a6_wide x=1") and not is_optuna("python -m cl_sweep +search=a6")
    assert is_training(".venv/bin/python -m cl_sweep a=1") and not is_training("python -m cl_sweep.analysis.tables results")
    assert basic_sweep_jobs("python -m cl_sweep --multirun seed=0,5,10 activation=topk_subtract activation.k=64,96") == 6
    assert is_permuted("python -m cl_sweep --multirun +sweep=a10_zk") and not is_permuted("python -m cl_sweep --multirun +sweep=a6")
