"""The Ray task that trains one pack of proxies, and `submit_pack`, which declares its resources.

    ref = submit_pack(corpus_dir, domains, mixtures, seeds, spec, num_cpus=1, num_gpus=0.0, max_retries=1)
    results = ray.get(ref)          # the list that workers.proxies.train_proxies returns

Resources are declared per task: `num_cpus` (torch's thread count inside the task follows it, so
packs never oversubscribe a node's cores) and a fractional `num_gpus` (several packs share a GPU).
Ray spreads tasks over every node of the cluster that has the resources; a 512-proxy study is 128
packs of 4 for Ray to place. A task whose worker process dies (killed, out of memory, os._exit)
is run again by Ray up to `max_retries` times; a diverged proxy is not a failure of the task (it
comes back with status "diverged", and the driver decides whether to retry it).

torch is imported inside the task only, so importing this module on the driver stays cheap.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np
import ray

from workers.spec import ProxySpec

log = logging.getLogger(__name__)


def assigned_threads() -> int:
    """CPU threads this Ray task may use: the CPUs it holds (at least 1)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


@ray.remote
def train_pack_remote(corpus_dir: str, domains: list[str], mixtures: np.ndarray, seeds: list[int],
                      spec: dict, lr_scales: list[float] | None = None) -> list[dict]:
    """Train a pack of proxies inside a Ray worker (see workers.proxies.train_proxies)."""
    spec = ProxySpec(**spec)
    marker = spec.crash_once_marker
    if marker and not os.path.exists(marker):  # test hook: die once, as a killed worker would
        with open(marker, "w") as handle:
            handle.write(f"crashed once in pid {os.getpid()}\n")
        os._exit(1)
    if spec.device == "auto" and not ray.get_gpu_ids():
        spec = dataclasses.replace(spec, device="cpu")  # a task that holds no GPU never touches one
    from workers.proxies import train_proxies  # torch is imported here, in the worker

    # Ray reuses worker processes between tasks: set the thread count at the start of every task.
    return train_proxies(corpus_dir, domains, mixtures, seeds, spec,
                         threads=assigned_threads(), packed=True, lr_scales=lr_scales)


def submit_pack(corpus_dir: str, domains: Sequence[str], mixtures: np.ndarray, seeds: Sequence[int],
                spec: ProxySpec, num_cpus: float = 1, num_gpus: float = 0.0, max_retries: int = 1,
                lr_scales: Sequence[float] | None = None) -> ray.ObjectRef:
    """Submit one pack as a Ray task; returns the ObjectRef of its list of per-proxy results.

    num_gpus > 0 on a cluster without GPUs would never be scheduled: it is dropped (with a
    warning) so the pack runs on CPU. A worker that dies is retried `max_retries` times."""
    if isinstance(spec, dict):
        spec = ProxySpec(**spec)
    if num_cpus <= 0:
        raise ValueError(f"num_cpus must be positive, got {num_cpus}")
    if not 0.0 <= num_gpus:
        raise ValueError(f"num_gpus must be non-negative, got {num_gpus}")
    if num_gpus > 0 and ray.cluster_resources().get("GPU", 0.0) <= 0:
        log.warning("num_gpus=%s asked for on a cluster without GPUs: the pack runs on CPU", num_gpus)
        num_gpus = 0.0
    mixtures = np.asarray(mixtures, dtype=np.float64)
    task = train_pack_remote.options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_retries=int(max_retries), retry_exceptions=False,
        name=f"mixopt-pack-{len(mixtures)}",
    )
    return task.remote(str(corpus_dir), [str(d) for d in domains], mixtures, [int(s) for s in seeds],
                       dataclasses.asdict(spec), None if lr_scales is None else [float(x) for x in lr_scales])
