"""Many videos: a resumable batch queue, local workers per device, and Ray.

- ``items``: the batch's job (``JobSpec``), options, work items, results and summary;
- ``schedule``: the inputs a run takes on (what to skip, redo, resume), and where outputs go;
- ``worker``: executing one item, with the models a worker keeps loaded between items;
- ``local_backend``: one spawned worker process per GPU, or ``--workers N`` on the CPU;
- ``ray_backend``: the same work items as Ray tasks (``--ray auto|ADDRESS``);
- ``driver``: the one process that dispatches items and keeps the manifest and locks;
- ``split``: ``--split-shots``, one long video cut at shot starts into independent tasks;
- ``manifest``: ``<output folder>/iconface-batch.json``, every input's state, atomic writes;
- ``doctor``: the checks behind ``iconface-video doctor``.

Imports nothing heavy: worker processes import this package before they set their device.
"""
