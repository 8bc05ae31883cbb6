"""The built-in trackers of the `logger` group: none, csv, tensorboard, mlflow, wandb.

Each is a registered function whose keyword-only arguments are its config keys (the names its own
library uses) and which imports its library only when called, before anything trains.
"""

from __future__ import annotations

import csv as _csv
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlparse

import numpy as np

from cl_sweep.components.registry import register_logger
from cl_sweep.tracking import RunInfo, TrackerError


def _text(v: Any, cfg: Mapping) -> str | None:
    return None if isinstance(v, str) and v.strip() else "it must be a non-empty string"


def _optional_text(v: Any, cfg: Mapping) -> str | None:
    return None if v is None else _text(v, cfg)


def _writable(folder: str | None, key: str) -> None:
    if folder is None:
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe = Path(folder) / f".cl_sweep_probe_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise TrackerError(f"{key}={folder!r} is not a folder it can write ({e.strerror or e})") from None


@register_logger("none")
def none() -> None:
    """Logs nothing (the default)."""
    return None


# --- csv -----------------------------------------------------------------------------------------
class CSVTracker:
    """Per run a folder: params.json (params and tags), metrics.csv (one row per task), summary.json, accuracy_matrix.png."""

    def __init__(self, save_dir: str | None) -> None:
        self.save_dir = save_dir

    def folder(self, run: RunInfo) -> Path:
        base = run.job_dir / "csv" if self.save_dir is None else Path(self.save_dir) / run.relative
        return base / f"seed_{run.seed}"

    def start(self, run: RunInfo) -> dict:
        folder = self.folder(run)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps(
            {"name": run.name, "sweep": run.sweep, "grid_point": run.grid_point, "params": dict(run.params),
             "tags": dict(run.tags)}, indent=1, default=str))
        columns = ["step", "test_accuracy", "average_accuracy", "forgetting", "backward_transfer", "active_fraction",
                   "diverged", "train_loss", *(f"accuracy/task_{j + 1}" for j in range(run.num_tasks))]
        if run.eval_every:  # learning curves: the task count beside the optimizer step, the curve's points
            columns += ["task", "curve/test_accuracy", *(f"curve/accuracy/task_{j + 1}" for j in range(run.num_tasks))]
        with open(folder / "metrics.csv", "w", newline="") as f:
            _csv.writer(f).writerow(columns)
        return {"folder": folder, "columns": columns}

    def log(self, handle: dict, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": step, **metrics}
        with open(handle["folder"] / "metrics.csv", "a", newline="") as f:  # appended per task: readable while it runs
            _csv.writer(f).writerow([row.get(c, "") for c in handle["columns"]])

    def end(self, handle: dict, summary: Mapping[str, float], heatmap: Path | None, status: str) -> None:
        (handle["folder"] / "summary.json").write_text(json.dumps({"status": status, **summary}, indent=1))
        if heatmap is not None:
            shutil.copyfile(heatmap, handle["folder"] / "accuracy_matrix.png")

    def close(self) -> None:
        pass


@register_logger("csv", checks={"save_dir": _optional_text})
def csv(*, save_dir: Optional[str] = None) -> CSVTracker:
    """CSV files per run: under the job's folder (``<job>/csv/seed_<s>/``), or ``<save_dir>/<sweep>/<job>/seed_<s>/``."""
    _writable(save_dir, "logger.save_dir")
    return CSVTracker(save_dir)


# --- TensorBoard -----------------------------------------------------------------------------------
class TensorBoardTracker:
    """One event-file folder per seed, written with TensorBoard's own protobufs and writer (no TensorFlow)."""

    def __init__(self, save_dir: str | None) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.summary_pb2, self.EventFileWriter = summary_pb2, EventFileWriter
        self.save_dir = save_dir

    def folder(self, run: RunInfo) -> Path:
        base = run.job_dir / "tensorboard" if self.save_dir is None else Path(self.save_dir) / run.relative
        return base / f"seed_{run.seed}"

    def _write(self, writer, step: int, values: list) -> None:
        from tensorboard.compat.proto import event_pb2

        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=self.summary_pb2.Summary(value=values)))

    def start(self, run: RunInfo) -> Any:
        from tensorboard.plugins.text.summary_v2 import text_pb

        writer = self.EventFileWriter(str(self.folder(run)))
        table = "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in run.params.items())
        tags = "| tag | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in run.tags.items())
        writer.add_event(_with_time(text_pb("params", table)))
        writer.add_event(_with_time(text_pb("tags", tags)))
        writer.flush()
        return writer

    def log(self, writer: Any, step: int, metrics: Mapping[str, float]) -> None:
        self._write(writer, step, [self.summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()])
        writer.flush()

    def end(self, writer: Any, summary: Mapping[str, float], heatmap: Path | None, status: str) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        step = int(summary.get("step", summary.get("tasks_trained", 0)))
        self._write(writer, step, [self.summary_pb2.Summary.Value(tag=f"final/{k}", simple_value=v) for k, v in summary.items()])
        if heatmap is not None:
            from PIL import Image

            with Image.open(heatmap) as im:
                width, height = im.size
            image = self.summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                                   encoded_image_string=heatmap.read_bytes())
            self._write(writer, step, [self.summary_pb2.Summary.Value(tag="accuracy_matrix", image=image)])
        writer.add_event(_with_time(text_pb("status", status), step))
        writer.close()

    def close(self) -> None:
        pass


def _with_time(summary, step: int = 0):
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


@register_logger("tensorboard", checks={"save_dir": _optional_text})
def tensorboard(*, save_dir: Optional[str] = None) -> TensorBoardTracker:
    """TensorBoard event files, one folder per seed: ``<job>/tensorboard/seed_<s>/`` or ``<save_dir>/<sweep>/<job>/seed_<s>/``."""
    _writable(save_dir, "logger.save_dir")
    return TensorBoardTracker(save_dir)


# --- MLflow ----------------------------------------------------------------------------------------
class MLflowTracker:
    """A parent run per grid point, named ``<sweep>/<job>`` as W&B's group (a bare job number would
    repeat in every sweep of an experiment), with a nested run per seed; tags ``sweep`` and
    ``grid_point`` on both. The parent ends with its seeds' mean final metrics under the seeds' own
    keys (and ``final/final_accuracy_std``), so MLflow's runs table sorts grid points by them."""

    def __init__(self, tracking_uri: str | None, experiment_name: str, artifact_location: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)  # fails here for a bad URI
        if experiment is None:
            if artifact_location is None and tracking_uri and tracking_uri.startswith("sqlite:///"):
                # beside the database, not MLflow's default ./mlruns in whatever folder the job started in
                database = Path(tracking_uri[len("sqlite:///"):]).resolve()
                artifact_location = (database.parent / "mlartifacts").as_uri()
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifact_location)
        else:
            self.experiment_id = experiment.experiment_id
        self.parents: dict[str, str] = {}
        self.parent_of: dict[str, str] = {}  # a seed's run -> its grid point's run
        self.ended: dict[str, list[tuple[Mapping[str, float], str]]] = {}  # parent -> its seeds' (summary, status)

    def _parent(self, run: RunInfo) -> str:
        if run.grid_point not in self.parents:
            parent = self.client.create_run(self.experiment_id, run_name=run.relative.as_posix(), tags=dict(run.tags))
            params = {k: v for k, v in run.params.items() if k != "seed"}
            self._params(parent.info.run_id, params)
            self.parents[run.grid_point] = parent.info.run_id
            self.ended[parent.info.run_id] = []
        return self.parents[run.grid_point]

    def _params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def start(self, run: RunInfo) -> str:
        parent = self._parent(run)
        child = self.client.create_run(self.experiment_id, run_name=run.name,
                                       tags={**run.tags, "mlflow.parentRunId": parent, "seed": str(run.seed)})
        self._params(child.info.run_id, run.params)
        self.parent_of[child.info.run_id] = parent
        return child.info.run_id

    def log(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def end(self, run_id: str, summary: Mapping[str, float], heatmap: Path | None, status: str) -> None:
        self.log(run_id, int(summary.get("step", summary.get("tasks_trained", 0))), {f"final/{k}": v for k, v in summary.items()})
        if heatmap is not None:
            self.client.log_artifact(run_id, str(heatmap))
        self.client.set_terminated(run_id, _MLFLOW_STATUS.get(status, "FAILED"))
        self.ended[self.parent_of.pop(run_id)].append((summary, status))

    def close(self) -> None:
        for run_id in self.parents.values():
            seeds = self.ended.get(run_id, [])
            means = {}
            for key in ("final_accuracy", "average_accuracy", "forgetting", "backward_transfer"):
                values = [s[key] for s, _ in seeds if key in s]
                if values:
                    means[f"final/{key}"] = float(np.mean(values))
                    if key == "final_accuracy":
                        means["final/final_accuracy_std"] = float(np.std(values))
            if means:
                self.log(run_id, max(int(s.get("step", s.get("tasks_trained", 0))) for s, _ in seeds), means)
            statuses = {status for _, status in seeds}
            self.client.set_terminated(run_id, "FAILED" if "failed" in statuses else
                                       "KILLED" if "pruned" in statuses else "FINISHED")
        self.parents.clear()
        self.ended.clear()


_MLFLOW_STATUS = {"finished": "FINISHED", "pruned": "KILLED"}


@register_logger("mlflow", checks={"tracking_uri": _optional_text, "experiment_name": _text,
                                   "artifact_location": _optional_text})
def mlflow(*, tracking_uri: Optional[str] = None, experiment_name: str = "cl_sweep",
           artifact_location: Optional[str] = None) -> MLflowTracker:
    """MLflow runs (``mlflow-skinny`` is enough): ``tracking_uri`` null means MLflow's own default
    ($MLFLOW_TRACKING_URI, else its local store); a new experiment of an ``sqlite:///`` database
    keeps its artifacts in ``mlartifacts/`` beside the database unless ``artifact_location`` says."""
    try:
        return MLflowTracker(tracking_uri, experiment_name, artifact_location)
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 - the store's own error, shortened to its first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrackerError(f"logger.tracking_uri={tracking_uri!r} cannot be opened ({type(e).__name__}: {first[:300]})") from None


# --- Weights & Biases --------------------------------------------------------------------------------
class WandbTracker:
    """A W&B run per seed: ``group`` the grid point, ``job_type`` the sweep, params as its config."""

    def __init__(self, project: str, entity: str | None, mode: str | None, dir: str | None, tags: list[str]) -> None:
        import wandb

        self.wandb, self.project, self.entity, self.mode, self.dir, self.tags = wandb, project, entity, mode, dir, tags

    def start(self, run: RunInfo) -> Any:
        wandb = self.wandb
        tags = [f"{k}:{run.tags[k]}"[:64] for k in ("git", "benchmark", "activation", "optimizer", "model") if k in run.tags]
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_save_requirements=False,
                                  disable_git=True)
        return wandb.init(
            project=self.project, entity=self.entity, group=str(run.relative)[-128:],
            job_type=Path(run.sweep).name[:64], name=run.name, config={**run.params, "cl_sweep": dict(run.tags)},
            tags=[*tags, *self.tags], dir=self.dir, mode=self.mode, reinit="create_new", settings=settings,
        )

    def log(self, run: Any, step: int, metrics: Mapping[str, float]) -> None:
        run.log(dict(metrics), step=step)

    def end(self, run: Any, summary: Mapping[str, float], heatmap: Path | None, status: str) -> None:
        if heatmap is not None:
            run.log({"accuracy_matrix": self.wandb.Image(str(heatmap))},
                    step=int(summary.get("step", summary.get("tasks_trained", 0))))
        run.summary.update({**{f"final/{k}": v for k, v in summary.items()}, "status": status})
        run.finish(exit_code=0 if status != "failed" else 1)

    def close(self) -> None:
        pass


@register_logger("wandb", checks={"project": _text, "entity": _optional_text, "dir": _optional_text})
def wandb(*, project: str = "cl_sweep", entity: Optional[str] = None, offline: bool = False, dir: Optional[str] = None,
          tags: list[str] = ()) -> WandbTracker:
    """Weights & Biases runs. ``offline=true`` (or $WANDB_MODE=offline) writes them under ``dir``
    (else $WANDB_DIR or ./wandb) for a later ``wandb sync``; online, the server must answer before training starts."""
    import wandb as _wandb

    mode = "offline" if offline else None  # None: W&B's own choice ($WANDB_MODE, else online)
    _writable(dir, "logger.dir")
    if mode is None and os.environ.get("WANDB_MODE", "online") not in ("offline", "dryrun", "disabled"):
        url = _wandb.Settings().base_url
        host = urlparse(url)
        try:
            socket.create_connection((host.hostname, host.port or (443 if host.scheme == "https" else 80)), timeout=5).close()
        except OSError as e:
            raise TrackerError(
                f"the W&B server {url} cannot be reached ({e.strerror or e}); log offline with logger.offline=true "
                f"(then `wandb sync`), or set WANDB_BASE_URL to a server this machine reaches"
            ) from None
    return WandbTracker(project, entity, mode, dir, list(tags))
