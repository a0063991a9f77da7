"""Triton kernels of the restoration core, installed as ``iconface_video.kernels``.

Each kernel file holds the Triton forward and backward, an exact PyTorch twin (the CPU path
and the test oracle) and a dispatcher that uses Triton only for CUDA tensors:

- ``ranged_attention``: ``ranged_attention(q, k, v, table, scale=None, force_reference=False)``,
  variable-length attention over a range table of virtual sequences (two key ranges each),
  whose host-side checks and transpose live in ``range_tables``;
- ``adaln_modulate``: ``adaln_modulate(x, shift, scale, row, eps=1e-6)``,
  ``LayerNorm(x) * (1 + scale[row]) + shift[row]``;
- ``gate_residual``: ``gate_residual(h, y, gate, row)``, ``h + gate[row] * y``.

``bench`` builds the core's range-table layouts and compares/times the kernels on a GPU.
"""
