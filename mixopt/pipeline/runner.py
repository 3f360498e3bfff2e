"""Proxy training on Ray: the edge between a study (arrays) and the workers (torch).

`RayProxyRunner.run` trains a batch of proxies as packed Ray tasks spread over every node of the
cluster, and hands each proxy's result to a callback as soon as its task finishes (the study
stores it at once, so a killed driver loses only the tasks in flight). A task whose worker dies is
retried by Ray (`max_retries`); a proxy whose loss diverged is retried with a smaller learning
rate; what still fails is reported with status "failed" or "diverged" and the study goes on.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mixopt.cluster import init_ray
from mixopt.pipeline.store import STATUS_DIVERGED, STATUS_FAILED, STATUS_OK

OnResult = Callable[[int, dict], None]


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


@dataclass
class PackPlan:
    indices: list[int]       # positions in the batch given to run()
    attempt: int = 1
    lr_scale: float = 1.0


class RayProxyRunner:
    """Trains proxies for one study (one corpus, one domain order, one recipe)."""

    def __init__(
        self,
        corpus_dir: str,
        domains: Sequence[str],
        spec,
        proxies_per_task: int = 4,
        cpus_per_task: float = 1.0,
        gpus_per_task: float = 0.25,
        retries: int = 1,
        diverged_lr_factor: float = 0.5,
    ):
        self.corpus_dir = str(corpus_dir)
        self.domains = list(domains)
        self.spec = spec
        self.proxies_per_task = proxies_per_task
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.retries = retries
        self.diverged_lr_factor = diverged_lr_factor

    def _submit(self, mixtures: np.ndarray, seeds: Sequence[int], plan: PackPlan, spec):
        from workers.remote import submit_pack

        if plan.lr_scale != 1.0:
            spec = dataclasses.replace(spec, lr=spec.lr * plan.lr_scale)
        gpus = self.gpus_per_task if cluster_gpus() > 0 else 0.0
        return submit_pack(
            self.corpus_dir,
            self.domains,
            mixtures[plan.indices],
            [int(seeds[i]) for i in plan.indices],
            spec,
            num_cpus=self.cpus_per_task,
            num_gpus=gpus,
            max_retries=self.retries,
        )

    def _packs(self, n: int) -> list[PackPlan]:
        """Split n proxies into packs of at most proxies_per_task, sized evenly."""
        if n == 0:
            return []
        count = -(-n // self.proxies_per_task)
        return [PackPlan(indices=list(chunk)) for chunk in np.array_split(np.arange(n), count)]

    def run(self, mixtures: np.ndarray, seeds: Sequence[int], on_result: OnResult, spec=None) -> None:
        """Train every mixture with its seed; call on_result(index, result) once per proxy.
        spec: another recipe than the runner's for these proxies (a multi-fidelity study's short runs).

        result: the worker's dict ("status", "loss", "bpb", "tokens", "seconds", ...) plus
        "attempt" and, for failures, "error"."""
        import ray

        mixtures = np.asarray(mixtures, dtype=np.float64)
        spec = self.spec if spec is None else spec
        in_flight = {}
        for plan in self._packs(len(mixtures)):
            in_flight[self._submit(mixtures, seeds, plan, spec)] = plan
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            plan = in_flight.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except Exception as exc:  # the worker died past its retries, or the task raised
                message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
                for index in plan.indices:
                    on_result(index, {"status": STATUS_FAILED, "error": message[:500], "attempt": plan.attempt})
                continue
            diverged = []
            for index, result in zip(plan.indices, results):
                result = dict(result, attempt=plan.attempt)
                if result["status"] == STATUS_DIVERGED and plan.attempt <= self.retries:
                    diverged.append(index)
                on_result(index, result)
            if diverged:
                retry = PackPlan(
                    indices=diverged,
                    attempt=plan.attempt + 1,
                    lr_scale=plan.lr_scale * self.diverged_lr_factor,
                )
                in_flight[self._submit(mixtures, seeds, retry, spec)] = retry


def study_runner(config, corpus_dir: str, domains: Sequence[str], spec, reporter) -> RayProxyRunner:
    """The Ray runner of a study config: joins (or starts) the config's cluster, saying which on
    the reporter, and declares the config's resources and retries per task."""
    if config.ray.address:
        where = f"connecting to Ray at {config.ray.address}"
    elif os.environ.get("RAY_ADDRESS"):
        where = f"joining the job's Ray cluster ({os.environ['RAY_ADDRESS']})"
    else:
        where = f"starting a local Ray cluster ({config.ray.num_cpus or os.cpu_count()} CPUs)"
    reporter.stage(where)
    init_ray(config.ray.address, config.ray.num_cpus)
    return RayProxyRunner(
        corpus_dir,
        domains,
        spec,
        proxies_per_task=config.study.proxies_per_task,
        cpus_per_task=config.study.cpus_per_task,
        gpus_per_task=config.study.gpus_per_task,
        retries=config.study.retries,
        diverged_lr_factor=config.study.diverged_lr_factor,
    )


def result_row(
    result: dict,
    domains: Sequence[str],
    weights: np.ndarray,
    seed: int,
    run_id: str,
    round_index: int,
    spec,
    recipe: str,
) -> dict:
    """A runs.parquet row from one worker result: weights over `domains`, losses over every set the
    worker scored (the domains, then the corpus's eval sets; None where a run has none)."""
    row = {
        "run_id": run_id,
        "round": round_index,
        "seed": int(seed),
        "preset": str(spec.preset),
        "tokens": int(result.get("tokens", spec.tokens) or 0),
        "seconds": float(result.get("seconds", 0.0) or 0.0),
        "status": result["status"],
        "attempt": int(result.get("attempt", 1)),
        "error": result.get("error"),
        "recipe": recipe,
    }
    for domain, weight in zip(domains, weights):
        row[f"w_{domain}"] = float(weight)
    losses = result.get("loss") or {}
    bpb = result.get("bpb") or {}
    for name in list(domains) + [n for n in losses if n not in domains]:
        row[f"loss_{name}"] = _finite_or_none(losses.get(name))
        row[f"bpb_{name}"] = _finite_or_none(bpb.get(name))
    if result["status"] != STATUS_OK:
        row["error"] = row["error"] or result["status"]
    return row


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None
