"""When a public kernel function may run its Triton implementation instead of its PyTorch twin."""

from __future__ import annotations

import os

import torch

try:  # Triton ships with Linux torch wheels, but not with every build (macOS, some CPU wheels).
    import triton  # noqa: F401

    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed torch build
    TRITON_AVAILABLE = False


KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def use_triton(*tensors: torch.Tensor, force_reference: bool = False) -> bool:
    """True when Triton imports, the caller does not force the twin, and every tensor is a CUDA
    fp16/bf16/fp32 tensor (float64 takes the twin: it exists for gradcheck, not for speed).

    CPU tensors always take the twin: the Triton interpreter is a test tool, far too slow for work.
    ``ICONFACE_KERNELS=reference`` in the environment forces the twins everywhere (debugging, or a
    GPU whose Triton cannot compile the kernels).
    Index tensors (tables, row indices) are not checked: the kernels move them to the device.
    """
    if force_reference or not TRITON_AVAILABLE or os.environ.get("ICONFACE_KERNELS") == "reference":
        return False
    return all(t.is_cuda and t.dtype in KERNEL_DTYPES for t in tensors)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the twins compute in: at least float32 (so they are a fair oracle for half
    precision kernels, which accumulate in float32), float64 kept for gradcheck."""
    return torch.promote_types(dtype, torch.float32)
