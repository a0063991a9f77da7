"""The batch queue on a Ray cluster: the same work items, run as Ray tasks.

``--ray ADDRESS`` connects to an existing cluster (``ray start --head`` on one machine,
``ray start --address=...`` on the others); ``--ray auto`` joins the cluster ``RAY_ADDRESS`` or a
local ``ray start`` names, or starts a private one on this machine. A process that has already
called ``ray.init`` (a notebook, a test) is used as it is.

Each item is one task asking for ``num_gpus=1`` where the cluster has GPUs (Ray then sets the
task's ``CUDA_VISIBLE_DEVICES``), else ``num_cpus=1``. The driver (this process) keeps the
manifest and lock files and does the final joins, so the inputs and the output folder must be
the same paths on every node (NFS, a cluster filesystem), and every node needs the same
iconface-video installed; results then land in the folder exactly as in a local run. Per-frame
progress stays on the workers; the driver reports each item's start and end.

Each task loads its models itself (local workers load them once and keep them): a task is the
unit Ray schedules and retries, and loading is seconds against minutes of restoration per file.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from iconface_video.batch.items import ItemResult, JobSpec, Message, WorkItem
from iconface_video.batch.worker import execute
from iconface_video.errors import UserError

if TYPE_CHECKING:
    from ray import ObjectRef

# A crashed worker (lost node, out of memory) is retried once; a failure inside the item is not
# a crash (``execute`` returns it) and is never retried.
_MAX_RETRIES = 1


def _ray_execute(item: WorkItem, job: JobSpec) -> ItemResult:
    """The task body: run the item, naming the node and process it ran in."""
    return execute(item, job, None, worker=f"ray {socket.gethostname()} pid {os.getpid()}")


def connect(address: str) -> bool:
    """Join the cluster at ``address`` ("auto": an existing one or a new local one); returns
    True if this call started the connection (and so should shut it down)."""
    try:
        import ray
    except ImportError:
        raise UserError('--ray needs Ray: pip install "iconface-video[ray]" (ray==2.60.0)') from None
    if ray.is_initialized():
        return False
    try:
        # log_to_driver off: task output (encoder logs) must not mix into this process's stdout,
        # which carries --json events.
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot connect to the Ray cluster at {address}: {error}") from None
    return True


class RayBackend:
    """Submits items as Ray tasks; ``slots`` is the cluster's GPU count, or its CPU count."""

    def __init__(self, job: JobSpec, address: str = "auto") -> None:
        import ray

        self._ray = ray
        self._owns = connect(address)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        task = ray.remote(_ray_execute)
        self._task = task.options(num_gpus=1, max_retries=_MAX_RETRIES) if gpus else task.options(
            num_cpus=1, max_retries=_MAX_RETRIES)
        self.slots = gpus or max(1, int(resources.get("CPU", 1)))
        self._job = ray.put(job)
        self._running: dict[ObjectRef, WorkItem] = {}
        self._started: list[Message] = []

    def submit(self, item: WorkItem) -> None:
        self._running[self._task.remote(item, self._job)] = item
        self._started.append(("start", item, "ray"))

    def poll(self, timeout: float) -> list[Message]:
        messages, self._started = self._started, []
        if not self._running:
            return messages
        ready, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=timeout)
        for ref in ready:
            item = self._running.pop(ref)
            messages.append(("end", self._result(ref, item)))
        return messages

    def _result(self, ref: ObjectRef, item: WorkItem) -> ItemResult:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return ItemResult(item, False, f"Ray task failed: {type(error).__name__}: {reason}", worker="ray")

    def close(self, abort: bool = False) -> None:
        """Cancel what still runs (only left after an abort) and leave a cluster this started."""
        for ref in self._running:
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns:
            self._ray.shutdown()

