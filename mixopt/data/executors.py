"""Where a build's tasks (encode.run_task) run: Ray tasks on the cluster, or in this process
(tests of pure logic, tiny inputs). Both offer the same three calls: submit, wait_one, forget."""

from __future__ import annotations

from mixopt.data.encode import PieceSettings, TaskResult, run_task
from mixopt.data.tokenizer import TokenizerSpec
from mixopt.data.units import ReadSpec, Unit
from mixopt.errors import MixoptError

TASKS_IN_FLIGHT_PER_CPU = 2


class LocalExecutor:
    """Runs each task when it is submitted; results come back in submission order."""

    def __init__(self, tokenizer: TokenizerSpec):
        self.tokenizer = tokenizer
        self.done: dict[int, TaskResult] = {}
        self.counter = 0
        self.slots = 1

    def submit(self, spec: ReadSpec, units: list[Unit], settings: PieceSettings) -> int:
        self.counter += 1
        self.done[self.counter] = run_task(spec, units, self.tokenizer, settings)
        return self.counter

    def wait_one(self, handles) -> tuple[int, TaskResult]:
        handle = min(handles)
        return handle, self.done.pop(handle)

    def forget(self, handle) -> None:
        self.done.pop(handle, None)


class RayExecutor:
    """One Ray task per group of units (1 CPU each, the tokenizer's own threads held to one)."""

    def __init__(self, tokenizer: TokenizerSpec):
        import ray

        self.ray = ray
        self.tokenizer_ref = ray.put(tokenizer)
        self.remote = ray.remote(
            num_cpus=1, max_retries=2, retry_exceptions=False, runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}}
        )(run_task)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)) * TASKS_IN_FLIGHT_PER_CPU)

    def submit(self, spec: ReadSpec, units: list[Unit], settings: PieceSettings):
        return self.remote.remote(spec, units, self.tokenizer_ref, settings)

    def wait_one(self, handles):
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        try:
            return ready[0], self.ray.get(ready[0])
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, MixoptError):
                raise exc.cause from None
            raise

    def forget(self, handle) -> None:
        """Drop a task's result unread: the task runs to its end and Ray frees what it returns. Not
        ray.cancel: cancelling a task while it completes can abort the driver (a failed check,
        "Tried to complete task that was not pending", in Ray's task manager)."""
