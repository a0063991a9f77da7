"""Many videos: a resumable batch queue, local workers per device, and Ray.

- ``queue``: planning (what to skip, redo, resume), work items, the local backend (one spawned
  worker per GPU or ``--workers N`` on the CPU) and the driver that keeps manifest and locks;
- ``ray_backend``: the same work items as Ray tasks (``--ray auto|ADDRESS``);
- ``split``: ``--split-shots``, one long video cut at shot starts into independent tasks;
- ``manifest``: ``<output folder>/iconface-batch.json``, every input's state, atomic writes;
- ``locks``: lock files that keep two runs off the same input, stale-lock recovery;
- ``doctor``: the checks behind ``iconface-video doctor``.

Imports nothing heavy: worker processes import this package before they set their device.
"""
