"""Structured configs of the sharded population launchers: `hydra/launcher=population_submitit_local`,
`population_slurm` and `population_ray` (`sharded.py`). A misspelt key fails at compose time."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

_MODULE = "hydra_plugins.cl_sweep_population_launcher.sharded"


@dataclass
class _ShardedConf:
    # Shards: the sweep's populations are cut into this many tasks of about equal models x steps,
    # each trained by one process (one GPU or CPU node); 1 to the number of jobs of the sweep.
    shards: int = 1
    # As `hydra/launcher=population`: models per compiled call (null = 2 on CPU, 256 on an
    # accelerator) and compiling each shard's structures in threads first (null = on accelerators).
    max_population: Optional[int] = None
    precompile: Optional[bool] = None


@dataclass
class PopulationSubmititLocalConf(_ShardedConf):
    _target_: str = f"{_MODULE}.SubmititShardedLauncher"
    cluster: str = "local"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # each shard's pickles and logs
    timeout_min: int = 1440
    # GPU ids the shards take in turn, one each (shard k gets visible_gpus[k % len]), e.g. [0,1,2,3];
    # null: every shard sees the GPUs this process sees (submitit's local executor would hide them).
    visible_gpus: Optional[list] = None
    # Each shard's XLA uses every CPU (the local population launcher's bits); cpu_threads=N limits it.


@dataclass
class PopulationSlurmConf(_ShardedConf):
    """One sbatch job array, one array task per shard, one GPU per task. The defaults are the sbatch lines
    ``--nodes=1 --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=8 --mem=64G --time=240``."""

    _target_: str = f"{_MODULE}.SubmititShardedLauncher"
    cluster: str = "slurm"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # sbatch scripts, pickles and SLURM logs
    partition: Optional[str] = None  # sbatch --partition (null: the cluster's default)
    account: Optional[str] = None  # sbatch --account, if the cluster wants one
    qos: Optional[str] = None
    nodes: int = 1
    tasks_per_node: int = 1  # one process per shard
    gpus_per_node: int = 1  # one GPU per shard
    gres: Optional[str] = None  # some clusters want gres: gpu:1 instead of gpus_per_node
    cpus_per_task: Optional[int] = 8  # the shard's CPUs (sbatch --cpus-per-task); its XLA uses them all
    mem_gb: int = 64
    timeout_min: int = 240  # per shard: a shard of the whole A.6 grid on one H100 takes minutes
    array_parallelism: int = 256  # shards of one sweep running at once
    setup: Optional[list] = None  # shell lines before the shard, e.g. ["source .venv/bin/activate"]
    additional_parameters: Any = field(default_factory=dict)  # any other sbatch option, e.g. {mail_type: END}


@dataclass
class PopulationRayConf(_ShardedConf):
    _target_: str = f"{_MODULE}.RayShardedLauncher"
    address: Optional[str] = "auto"  # `ray start --head`'s cluster on this machine, or "host:port"
    num_cpus: int = 1  # the resources each shard's Ray task asks for (Ray's accounting; XLA uses every CPU)
    num_gpus: Optional[float] = None  # null: 1 when the cluster has GPUs, else 0


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="population_submitit_local", node=PopulationSubmititLocalConf, provider="cl_sweep")
cs.store(group="hydra/launcher", name="population_slurm", node=PopulationSlurmConf, provider="cl_sweep")
cs.store(group="hydra/launcher", name="population_ray", node=PopulationRayConf, provider="cl_sweep")
