"""The `logger` group: each tracker logs one run per (grid point, seed) of a real two-job multirun,
read back through the tracker's own reader; a tracker that cannot start stops the job before training
(or, with on_error=warn, is left out); logging changes no number."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_SLICE, run_cli

SLICE = ("benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=2", "progress=false")
GRID = "optimizer.learning_rate=0.01,0.02"
SEEDS = (0, 1)
TASKS = 5  # split MNIST
PER_TASK = ("test_accuracy", "average_accuracy", "active_fraction", "accuracy/task_1")


def _multirun(tmp_path: Path, *args: str, env: dict | None = None) -> Path:
    sweep = tmp_path / "sweep"
    proc = run_cli("--multirun", *SLICE, GRID, *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.parent.name for p in sweep.glob("*/result.json")) == ["0", "1"]
    return sweep


def _result(job_dir: Path) -> dict:
    return json.loads((job_dir / "result.json").read_text())


pytestmark = pytest.mark.slow


def test_csv_one_folder_per_grid_point_and_seed_with_every_task(tmp_path):
    sweep = _multirun(tmp_path, "logger=csv")
    for job in ("0", "1"):
        result = _result(sweep / job)
        for i, seed in enumerate(SEEDS):
            folder = sweep / job / "csv" / f"seed_{seed}"
            params = json.loads((folder / "params.json").read_text())
            assert params["params"]["seed"] == seed
            assert params["params"]["optimizer.learning_rate"] == result["hyperparameters"]["optimizer.learning_rate"]
            assert params["grid_point"] == str(sweep / job) and params["sweep"] == str(sweep)
            assert params["tags"]["benchmark"] == "split_mnist" and params["tags"]["git"]
            rows = list(csv.DictReader(open(folder / "metrics.csv")))
            assert [int(r["step"]) for r in rows] == list(range(1, TASKS + 1))  # 1-based task count
            for t, row in enumerate(rows):  # the per-task accuracies are the result's matrix rows
                for j in range(t + 1):
                    assert float(row[f"accuracy/task_{j + 1}"]) == pytest.approx(result["accuracy_matrix"][i][t][j])
                assert float(row["average_accuracy"]) == pytest.approx(result["average_accuracy"][i][t])
                assert float(row["active_fraction"]) == pytest.approx(result["active_fraction"][i][t])
                assert float(row["train_loss"]) == pytest.approx(result["train_loss"][i][t])  # the task's mean loss
            assert float(rows[-1]["forgetting"]) == pytest.approx(result["forgetting"][i])
            assert float(rows[-1]["backward_transfer"]) == pytest.approx(result["backward_transfer"][i])
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["status"] == "finished"
            assert summary["final_accuracy"] == pytest.approx(result["final_accuracy"][i])
            assert (folder / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_csv_through_the_population_launcher_logs_each_job_of_a_population(tmp_path):
    sweep = _multirun(tmp_path, "logger=csv", "hydra/launcher=population")
    runs = sorted(p.parent.relative_to(sweep).as_posix() for p in sweep.glob("*/csv/*/summary.json"))
    assert runs == ["0/csv/seed_0", "0/csv/seed_1", "1/csv/seed_0", "1/csv/seed_1"]
    for job in ("0", "1"):
        result = _result(sweep / job)
        rows = list(csv.DictReader(open(sweep / job / "csv" / "seed_1" / "metrics.csv")))
        assert float(rows[-1]["test_accuracy"]) == pytest.approx(result["final_accuracy"][1])


def test_tensorboard_one_event_folder_per_seed_read_back_with_its_accumulator(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = _multirun(tmp_path, "logger=tensorboard", f"logger.save_dir={tmp_path / 'tb'}")
    folders = sorted(p.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").glob("*/*/seed_*"))
    assert folders == [f"sweep/{j}/seed_{s}" for j in ("0", "1") for s in SEEDS]  # <sweep>/<grid point>/seed_<s>
    for job in ("0", "1"):
        result = _result(sweep / job)
        for i, seed in enumerate(SEEDS):
            acc = EventAccumulator(str(tmp_path / "tb" / "sweep" / job / f"seed_{seed}"), size_guidance={"images": 0}).Reload()
            scalars = acc.Tags()["scalars"]
            for name in PER_TASK:
                assert name in scalars
            events = acc.Scalars("average_accuracy")
            assert [e.step for e in events] == list(range(1, TASKS + 1))
            assert [e.value for e in events] == pytest.approx(result["average_accuracy"][i], rel=1e-6)
            assert acc.Scalars("final/final_accuracy")[0].value == pytest.approx(result["final_accuracy"][i], rel=1e-6)
            assert "accuracy_matrix" in acc.Tags()["images"]
            params = acc.Tensors("params")[0].tensor_proto.string_val[0].decode()
            assert f"| seed | {seed} |" in params and "optimizer.learning_rate" in params


def test_mlflow_parent_run_per_grid_point_nested_run_per_seed_in_sqlite(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    sweep = _multirun(tmp_path, "logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment_name=trackers_test")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["trackers_test"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 2 and len(children) == 4  # 2 grid points x 2 seeds
    assert set(runs["tags.sweep"]) == {str(sweep)}
    for job in ("0", "1"):
        result = _result(sweep / job)
        parent = parents[parents["tags.grid_point"] == str(sweep / job)]
        assert parent["tags.mlflow.runName"].iloc[0] == f"sweep/{job}" and parent["status"].iloc[0] == "FINISHED"
        assert parent["metrics.final/final_accuracy"].iloc[0] == pytest.approx(result["final_accuracy_mean"])  # its seeds' mean
        assert parent["metrics.final/final_accuracy_std"].iloc[0] == pytest.approx(result["final_accuracy_std"])
        mine = children[children["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
        assert sorted(mine["params.seed"].astype(int)) == list(SEEDS)
        assert set(mine["params.optimizer.learning_rate"]) == {str(result["hyperparameters"]["optimizer.learning_rate"])}
        assert set(mine["status"]) == {"FINISHED"} and set(mine["tags.git"]) == {result["versions"]["git"] or "unknown"}
        for _, run in mine.iterrows():
            i = SEEDS.index(int(run["params.seed"]))
            assert run["metrics.final/final_accuracy"] == pytest.approx(result["final_accuracy"][i])
            history = mlflow.MlflowClient(uri).get_metric_history(run["run_id"], "accuracy/task_1")
            assert [m.step for m in history] == list(range(1, TASKS + 1))
            assert [m.value for m in history] == pytest.approx([row[0] for row in result["accuracy_matrix"][i]])
            artifacts = [a.path for a in mlflow.MlflowClient(uri).list_artifacts(run["run_id"])]
            assert artifacts == ["accuracy_matrix.png"]


def _wandb_records(path: Path):
    """The records of a W&B offline run file (.wandb: a LevelDB-style log of wandb's own protobuf
    `Record`s). wandb 0.31 ships no Python reader of it, so the framing is read here and every record
    is decoded with wandb's own schema (wandb.proto.wandb_internal_pb2)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payload = 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):  # full, first
            payload = chunk
        else:  # middle, last
            payload += chunk
        if kind in (1, 4) and payload:
            record = pb.Record()
            record.ParseFromString(payload)
            yield record


def test_wandb_offline_run_per_seed_grouped_by_grid_point_and_sweep(tmp_path):
    sweep = _multirun(tmp_path, "logger=wandb", "logger.project=trackers_test", "logger.offline=true",
                      env={"WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"})
    runs = {}
    for f in (tmp_path / "wandb").glob("offline-run-*/run-*.wandb"):
        records = list(_wandb_records(f))
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
                   for r in records if r.WhichOneof("record_type") == "history"]
        runs[(run.run_group, config["seed"])] = (run, config, history)
        assert list(f.parent.glob("files/media/images/accuracy_matrix_*.png"))
    assert sorted(runs) == [(f"sweep/{j}", s) for j in ("0", "1") for s in SEEDS]
    for (group, seed), (run, config, history) in runs.items():
        result = _result(sweep / group.split("/")[1])
        i = SEEDS.index(seed)
        assert run.project == "trackers_test" and run.job_type == "sweep"
        assert config["optimizer.learning_rate"] == result["hyperparameters"]["optimizer.learning_rate"]
        assert any(t.startswith("git:") for t in run.tags)
        steps = [h for h in history if "average_accuracy" in h]
        assert [h["_step"] for h in steps] == list(range(1, TASKS + 1))
        assert [h["average_accuracy"] for h in steps] == pytest.approx(result["average_accuracy"][i])
        assert any(k.startswith("accuracy_matrix") for h in history for k in h)  # the heatmap image, at the last step


def test_many_loggers_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    sweep = _multirun(tmp_path, "logger=many", "logger.loggers=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}")
    assert len(list(sweep.glob("*/csv/seed_*/summary.json"))) == 4
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert len(mlflow.search_runs(experiment_names=["cl_sweep"])) == 6  # 2 parents + 4 seeds


def test_csv_logs_the_learning_curve_at_optimizer_steps(curve_job):
    """With ``eval_every`` the steps are optimizer steps: the curve's points inside each task (``curve/...``)
    and, at each task's last step, the per-task metrics with the task count and the task's training loss."""
    result = _result(curve_job)
    for i, seed in enumerate(SEEDS):
        folder = curve_job / "csv" / f"seed_{seed}"
        rows = list(csv.DictReader((folder / "metrics.csv").read_text().splitlines()))
        curve = result["curve"][i]
        assert [int(r["step"]) for r in rows] == curve["step"][1:]  # all but the point before training
        ends = [r for r in rows if r["task"]]
        assert [int(r["step"]) for r in ends] == [3, 6, 9, 12, 15] and [int(float(r["task"])) for r in ends] == [1, 2, 3, 4, 5]
        assert [float(r["train_loss"]) for r in ends] == pytest.approx(result["train_loss"][i])
        assert [float(r["test_accuracy"]) for r in ends] == pytest.approx([curve["accuracy"][k] for k in (2, 4, 6, 8, 10)])
        inside = [r for r in rows if not r["task"]]
        points = [k for k, s in enumerate(curve["step"]) if s in (2, 4, 8, 10, 14)]
        assert [int(r["step"]) for r in inside] == [2, 4, 8, 10, 14]
        assert [float(r["curve/test_accuracy"]) for r in inside] == pytest.approx([curve["accuracy"][k] for k in points])
        assert float(inside[1]["curve/accuracy/task_2"]) == pytest.approx(curve["task_accuracy"][points[1]][1])
        assert inside[1]["curve/accuracy/task_3"] == ""  # only the tasks seen so far
        assert json.loads((folder / "summary.json").read_text())["step"] == 15


def test_logging_changes_no_number(tmp_path):
    plain = run_cli(*SLICE, f"hydra.run.dir={tmp_path / 'plain'}", cwd=tmp_path)
    logged = run_cli(*SLICE, "logger=many", "logger.loggers=[csv,tensorboard]", f"hydra.run.dir={tmp_path / 'logged'}",
                     cwd=tmp_path)
    assert plain.returncode == 0 and logged.returncode == 0, logged.stderr[-2000:]
    a, b = _result(tmp_path / "plain"), _result(tmp_path / "logged")
    for key in ("accuracy_matrix", "final_accuracy", "active_fraction", "average_accuracy", "forgetting"):
        assert a[key] == b[key]


@pytest.mark.parametrize("args, says", [
    (("logger=mlflow", "logger.tracking_uri=sqlite:///{tmp}/a_file/m.db"), "logger.tracking_uri="),  # a folder that is a file
    (("logger=mlflow", "logger.tracking_uri=nosuchscheme://x"), "logger.tracking_uri="),
    (("logger=wandb", "logger.offline=false"), "cannot be reached"),
    (("logger=csv", "logger.save_dir={tmp}/a_file/csv"), "logger.save_dir="),
    (("logger=mlflow", "+logger.experiment=x"), "Did you mean logger.experiment_name"),
    (("logger=many", "logger.loggers=[csv,nosuch]"), "logger.loggers="),
    (("logger=csv", "logger.on_error=maybe"), "logger.on_error="),
])
def test_a_tracker_that_cannot_start_stops_the_job_before_training(tmp_path, args, says):
    env = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_MODE": "online"}  # loopback port nobody listens on
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_cli(*SLICE, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and says in proc.stderr
    assert "Nothing was trained" in proc.stderr or "nothing was trained" in proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_on_error_warn_warns_once_and_trains_on(tmp_path):
    proc = run_cli(*SLICE, "logger=mlflow", "logger.tracking_uri=nosuchscheme://x", "logger.on_error=warn",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("logger=mlflow cannot start") == 1 and "on_error=warn" in proc.stderr
    assert _result(tmp_path / "run")["status"] == "ok"


def test_logger_none_imports_no_tracker_package():
    code = ("import sys, cl_sweep.config, cl_sweep.cli, cl_sweep.tracking.loggers; "
            "from cl_sweep.tracking import Tracking; Tracking.open([{'logger': {'name': 'none'}}]); "
            "print(sorted(m for m in ('mlflow', 'wandb', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
