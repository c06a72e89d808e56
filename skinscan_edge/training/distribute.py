"""Where training runs: one device, the GPUs of one machine, or several machines.

``train --strategy``:
  * ``default``: TensorFlow's default placement (one GPU if there is one, else the CPU);
  * ``mirrored``: ``tf.distribute.MirroredStrategy`` over every GPU of this machine. With no
    GPU, ``--cpu-replicas N`` splits the CPU into N logical devices, which exercises the same
    code path (useful for tests; it is not faster);
  * ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines named in
    the ``TF_CONFIG`` environment variable (the standard TensorFlow cluster spec). Every worker
    runs the same command; the chief (``task.type == "chief"``, or worker 0 when the cluster has
    no chief) alone writes the run directory.

``--batch-size`` is the global batch: TensorFlow splits each batch across the replicas.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from skinscan_edge.core.config import STRATEGIES
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.tf import tf



@dataclass
class Placement:
    """The strategy to build the model under, and this process's role in it."""

    strategy: object
    name: str
    replicas: int
    workers: int
    task: str
    is_chief: bool

    def describe(self) -> dict:
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers,
                "written_by": self.task}


def parse_tf_config(text: str | None) -> dict:
    """Validate ``TF_CONFIG``; returns ``{"workers": n, "task": "worker:1", "is_chief": bool}``."""
    if not text:
        raise SkinscanError("--strategy multi-worker needs the TF_CONFIG environment variable "
                            "(cluster and task; see docs/distributed.md)")
    try:
        conf = json.loads(text)
        cluster, task = conf["cluster"], conf["task"]
        kind, index = str(task["type"]), int(task["index"])
        members = cluster[kind]
    except (ValueError, KeyError, TypeError) as e:
        raise SkinscanError(f"TF_CONFIG is not a valid cluster spec ({type(e).__name__}: {e}); expected "
                            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    if not 0 <= index < len(members):
        raise SkinscanError(f"TF_CONFIG task {kind}:{index} is not in the cluster's {len(members)} {kind}(s)")
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return {"workers": workers, "task": f"{kind}:{index}", "is_chief": is_chief}


def make_placement(name: str, cpu_replicas: int = 1, worker_timeout_s: float = 300.0) -> Placement:
    """Create the strategy. Call it before TensorFlow runs any operation (it configures devices)."""
    if name not in STRATEGIES:
        raise SkinscanError("--strategy: " + did_you_mean(name, STRATEGIES, "strategy", "strategies"))
    if cpu_replicas < 1:
        raise SkinscanError(f"--cpu-replicas must be at least 1, got {cpu_replicas}")
    if cpu_replicas > 1 and name != "mirrored":
        raise SkinscanError("--cpu-replicas only applies to --strategy mirrored")
    t = tf()
    if name == "default":
        return Placement(t.distribute.get_strategy(), name, 1, 1, "local", True)
    if name == "mirrored":
        gpus = t.config.list_physical_devices("GPU")
        if gpus and cpu_replicas > 1:
            raise SkinscanError(f"--cpu-replicas is for machines without a GPU; this one has {len(gpus)}")
        if gpus:
            strategy = t.distribute.MirroredStrategy()
        else:
            if cpu_replicas < 2:
                raise SkinscanError("--strategy mirrored found no GPU; on a CPU-only machine pass "
                                    "--cpu-replicas N (N >= 2) to mirror over N logical CPU devices")
            cpu = t.config.list_physical_devices("CPU")[0]
            try:
                t.config.set_logical_device_configuration(
                    cpu, [t.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)])
            except RuntimeError:
                raise SkinscanError("--cpu-replicas must be set before TensorFlow starts; "
                                    "run `skinscan-edge train` in a fresh process") from None
            strategy = t.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
        return Placement(strategy, name, strategy.num_replicas_in_sync, 1, "local", True)
    role = parse_tf_config(os.environ.get("TF_CONFIG"))
    _configure_coordination(worker_timeout_s)
    strategy = t.distribute.MultiWorkerMirroredStrategy()
    return Placement(strategy, name, strategy.num_replicas_in_sync, role["workers"], role["task"],
                     role["is_chief"])


def _configure_coordination(timeout_s: float) -> None:
    """TensorFlow's coordination service with our timeouts instead of its defaults (a 10 s
    heartbeat, which a busy host missed: "tasks are unhealthy (stopped sending heartbeats)").

    TensorFlow has no public setting for them: MultiWorkerMirroredStrategy configures the service
    itself unless one is configured already, so this makes the same call first, with timeouts.
    """
    try:  # where TensorFlow 2.21's own strategy imports it from (checked); older releases kept it in tsl
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    except ImportError:
        from tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import TFConfigClusterResolver
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    spec = TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    ms = int(timeout_s * 1000)
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=ms, cluster_register_timeout_in_ms=ms,
        shutdown_barrier_timeout_in_ms=ms)


def shard_by_data(dataset):
    """Split a tf.data pipeline across workers by element: ours reads files through
    ``numpy_function``, so TensorFlow's default file-based sharding cannot apply."""
    options = tf().data.Options()
    options.experimental_distribute.auto_shard_policy = tf().data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
