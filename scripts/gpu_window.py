"""The one command for a short GPU window: kernel checks, end-to-end render timing, then training.

    python scripts/gpu_window.py --budget-s 540 --out OUT            # on the GPU machine
    python scripts/gpu_window.py --make-kit runs/gpu-kit --pack PACK --media ../shared/media

Inside ``--budget-s`` seconds (wall clock, start-up of this process included) it

1. runs the kernel checks (``scripts/gpu_check.py --kernels-only``: every Triton kernel compiled and
   compared with its PyTorch twin), at most a minute;
2. times the main command end to end (decode, analyse/detect, restore, paste, encode) with the
   current checkpoint on each clip of the kit (1080p and 720p heads, one face and a crowd), and
   decode+encode alone on the same frames as the floor;
3. continues training the checkpoint (``--init``, default the embedded one) with
   ``configs/train/gpu-window.yaml`` for the time left minus a safety margin, checkpointing every
   minute; a rerun with the same ``--out`` resumes that run;
4. writes ``OUT/gpu_window.json`` with every number, the torch/Triton/CUDA/driver versions and the
   device name (rewritten after each section, so a killed run leaves what it measured).

Every section runs in a child process with a timeout taken from what is left of the budget, so a
hang cannot overrun it; training is asked to stop (SIGTERM: it checkpoints and exits) before its
time is up, and killed if it does not. ``OUT/restorer.safetensors`` (+ ``.json``) is usable at every
moment: the starting checkpoint is copied there first and replaced (atomically) by the newest
trained one. The training run itself is in ``OUT/run/`` (log.jsonl, loss.png, checkpoints/).

``--make-kit DIR`` (on the CPU machine, before the window) copies the face pack and the clips into
``DIR`` (use an ignored folder of the checkout, e.g. ``runs/gpu-kit``, so it travels with the code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "train" / "gpu-window.yaml"
DEFAULT_KIT = REPO / "runs" / "gpu-kit"
# Kit clips (paths under the shared media folder): name -> (source, what it measures)
KIT_CLIPS = {
    "1080p-one-face": "train_hr/SkyworkAI__SkyReels-A1/assets/driving_video/3.mp4",
    "1080p-crowd": "src/timesler__facenet-pytorch/examples/video.mp4",
    "720p-one-face": "src/KwaiVGI__LivePortrait/assets/examples/source/s18.mp4",
}


# ----------------------------------------------------------------------------- budget
class Budget:
    """Seconds left until ``budget_s`` after ``start``, less ``margin_s`` kept for the final writes."""

    def __init__(self, budget_s: float, margin_s: float, start: float) -> None:
        self.end = start + budget_s - margin_s
        self.start = start

    def left(self) -> float:
        return self.end - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_child(cmd: list[str], timeout: float, *, log: Path, grace: float = 0.0, env: dict | None = None) -> dict:
    """Run ``cmd`` with stdout/stderr to ``log``; after ``timeout`` s send SIGTERM, then SIGKILL after
    ``grace`` s. Returns rc, seconds, and whether it timed out."""
    started = time.monotonic()
    if timeout <= 1:
        return {"skipped": "no time left in the budget"}
    with log.open("w") as out:
        # A new process group, so a kill reaches the child's own workers too.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(timeout=max(grace, 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return {"rc": proc.returncode, "seconds": round(time.monotonic() - started, 2), "timed_out": timed_out}


def _tail(path: Path, lines: int = 6) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


# ----------------------------------------------------------------------------- machine
def versions() -> dict:
    import importlib.metadata as md

    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(), "device": "cpu"}
    try:
        info["triton"] = md.version("triton")
    except md.PackageNotFoundError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=15)
            info["driver"], info["gpu_memory"] = [s.strip() for s in smi.stdout.splitlines()[0].split(",")]
        except (OSError, subprocess.TimeoutExpired, IndexError, ValueError):
            info["driver"] = None
    return info


# ----------------------------------------------------------------------------- render timing (child)
def render_stage(clip: Path, frames: int, work: Path, device: str, checkpoint: str | None) -> dict:
    """Decode+encode alone, then the whole main command, on the first ``frames`` frames of ``clip``."""
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_render import copy_head

    from iconface_video.analysis.settings import AnalyzeSettings
    from iconface_video.io.probe import probe
    from iconface_video.job import JobSettings, run_job
    from iconface_video.pipeline import restore_file
    from iconface_video.render.options import RenderOptions

    head = copy_head(clip, work / "clip.mp4", frames)
    video = probe(head).video
    n = probe(head).frame_count
    tick = time.perf_counter()
    run_job(head, work / "plain.mp4", JobSettings(overwrite=True))
    floor = time.perf_counter() - tick
    options = RenderOptions(overwrite=True, html=False, device=device, checkpoint=checkpoint)
    tick = time.perf_counter()
    report = restore_file(head, work / "restored.mp4", options, AnalyzeSettings(contact_sheets=False))
    total = time.perf_counter() - tick
    stages = {k: round(v, 3) for k, v in report.timings.items() if k not in ("frames", "faces", "grey_faces")}
    render_total = report.timings.get("total", total)
    seconds = {"analyse": round(total - render_total, 3), **{f"render.{k}": v for k, v in stages.items()}}
    return {
        "clip": clip.name, "size": f"{video.width}x{video.height}", "frames": n, "device": report.device,
        "faces_restored": report.faces_restored, "tracks": [{"side": t.get("side"), "faces": t.get("faces")} for t in report.tracks],
        "decode_encode_s": round(floor, 3), "decode_encode_fps": round(n / floor, 2),
        "end_to_end_s": round(total, 3), "end_to_end_fps": round(n / total, 2),
        "ratio_to_decode_encode": round(total / floor, 2),
        "seconds": seconds, "share": {k: round(v / total, 3) for k, v in seconds.items() if k != "render.total"},
        "note": "render stages overlap (threads): their shares can add up to more than 1",
    }


# ----------------------------------------------------------------------------- training
def training_config(config: Path, out: Path, *, init: Path | None, pack: str | None) -> tuple[Path, dict]:
    """Resolve the window's training YAML into ``OUT/train.yaml``: the core is the starting
    checkpoint's own network (so a warm start always fits), ``init`` that checkpoint, and
    ``device_data`` the pack (dropped when there is no pack file, or when the trainer has no such
    field: then the file loader reads ``--data``)."""
    import dataclasses

    import yaml

    from iconface_video.core.checkpoint import read_sidecar
    from iconface_video.train.config import TrainConfig

    data = yaml.safe_load(config.read_text()) or {}
    if init is not None:
        core_json = out / "core.json"
        write_json(core_json, read_sidecar(init)["config"])
        data["core"], data["init"] = str(core_json), str(init)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    pack_path = Path(pack) if pack else (REPO / data["device_data"] if data.get("device_data") else None)
    if pack_path is not None and pack_path.is_file() and "device_data" in fields:
        data["device_data"] = str(pack_path.resolve())
    else:
        data.pop("device_data", None)
    TrainConfig.from_dict(data)  # fails here, in this process, on a bad config
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, data


def latest_restorer(run: Path) -> Path | None:
    marker = run / "checkpoints" / "latest"
    if not marker.is_file():
        return None
    path = run / "checkpoints" / marker.read_text().strip() / "restorer.safetensors"
    return path if path.is_file() else None


def publish(checkpoint: Path, out: Path) -> None:
    """Copy a checkpoint (+ sidecar) to ``OUT/restorer.*``, each file replaced atomically."""
    for src, name in ((checkpoint.with_suffix(".json"), "restorer.json"), (checkpoint, "restorer.safetensors")):
        tmp = out / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, out / name)


def train_summary(run: Path, cfg: dict) -> dict:
    """Steps, crops/s (between the first and last logged steps of this process: start-up
    excluded; hr steps counted at their quarter batch) and losses."""
    log = run / "log.jsonl"
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    if not recs:
        return {"steps": 0}
    first, last = recs[0], recs[-1]
    for prev, rec in zip(recs, recs[1:]):  # a resumed run restarts its clock: measure this process only
        if rec["elapsed_s"] < prev["elapsed_s"]:
            first = rec
    batch, every = int(cfg.get("batch_size", 1)), int(cfg.get("hr_every", 0) or 0)

    def crops(step: int) -> int:
        hr = step // every if every > 0 else 0
        return (step - hr) * batch + hr * max(1, batch // 4)

    span = last["elapsed_s"] - first["elapsed_s"]
    losses = {k: v for k, v in last.items() if k.startswith("loss_")}
    return {"steps": last["step"], "crops": crops(last["step"]), "train_wall_s": last["elapsed_s"],
            "crops_per_s": round((crops(last["step"]) - crops(first["step"])) / span, 1) if span > 0 else None,
            "loss_first": {k: first.get(k) for k in losses}, "loss_last": losses}


# ----------------------------------------------------------------------------- the kit
def make_kit(kit: Path, pack: Path, media: Path) -> dict:
    """Copy the pack and the kit clips into ``kit`` (for the GPU machine); returns sizes in MiB."""
    kit.mkdir(parents=True, exist_ok=True)
    (kit / "clips").mkdir(exist_ok=True)
    shutil.copyfile(pack, kit / "faces_pack.bin")
    for name, rel in KIT_CLIPS.items():
        if not (media / rel).is_file():
            raise SystemExit(f"gpu_window: clip {media / rel} not found (--media is the shared media folder)")
        shutil.copyfile(media / rel, kit / "clips" / f"{name}.mp4")
    return {p.relative_to(kit).as_posix(): round(p.stat().st_size / 2**20, 2) for p in sorted(kit.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- main
def window(args: argparse.Namespace) -> dict:
    import torch

    budget = Budget(args.budget_s, args.margin_s, START)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "gpu_window.json"
    report: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": args.budget_s,
                    "margin_s": args.margin_s, "command": sys.argv, "versions": versions(), "sections_s": {}}
    write_json(report_path, report)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    init = Path(args.init) if args.init else _embedded_checkpoint()
    if init is not None and not (out / "restorer.safetensors").is_file():
        publish(init, out)  # usable from the first second on
    report["init"] = str(init) if init else None

    def section(name: str, fn) -> None:
        tick = time.monotonic()
        try:
            report[name] = fn()
        except Exception as err:  # noqa: BLE001 - keep every other number when one section fails
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        report["sections_s"][name] = round(time.monotonic() - tick, 2)
        report["elapsed_s"] = round(budget.elapsed(), 2)
        write_json(report_path, report)

    # 1. kernels
    def kernels() -> dict:
        if device != "cuda":
            return {"skipped": "no CUDA device (the CPU check of the kernels is tests/test_kernels_triton.py)"}
        log = out / "kernels.log"
        res = run_child([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--kernels-only"],
                        min(args.kernels_s, 0.15 * args.budget_s, budget.left()), log=log)
        text = log.read_text(errors="replace") if log.is_file() else ""
        start = 0 if text.startswith("{") else text.rfind("\n{\n") + 1  # the JSON is printed last
        try:
            res["result"] = json.loads(text[start:]) if text else None
        except ValueError:
            res["result"] = None
        if res["result"] is None:
            res["log_tail"] = _tail(log)
        return res

    if not args.skip_kernels:
        section("kernels", kernels)

    # 2. render timing
    def render() -> dict:
        results = {}
        clips = args.clips if args.clips is not None else sorted((args.kit / "clips").glob("*.mp4"))
        if not clips:
            return {"skipped": f"no clips (pass --clips or make a kit in {args.kit})"}
        with tempfile.TemporaryDirectory(prefix="gpu_window_") as tmp:
            for clip in clips:
                work = Path(tmp) / clip.stem
                work.mkdir()
                log = out / f"render-{clip.stem}.log"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", "render", "--clip", str(clip),
                       "--frames", str(args.frames), "--work", str(work), "--device", device]
                if init is not None:
                    cmd += ["--init", str(init)]
                res = run_child(cmd, min(args.render_s, 0.15 * args.budget_s, budget.left() - args.min_train_s), log=log)
                if (work / "render.json").is_file():
                    res.update(json.loads((work / "render.json").read_text()))
                elif "skipped" not in res:
                    res["log_tail"] = _tail(log)
                results[clip.stem] = res
        return results

    if not args.skip_render:
        section("render", render)

    # 3. training
    def train() -> dict:
        cfg_path, cfg = training_config(args.config, out, init=init, pack=args.pack)
        run = out / "run"
        data = args.data or cfg.get("device_data")
        if not data:
            return {"skipped": "no training data: give --data (identity folder) or a pack (--pack / device_data)"}
        left = budget.left()
        grace = min(args.stop_grace_s, 0.25 * left)
        cmd = [sys.executable, "-m", "iconface_video", "train", "--config", str(cfg_path), "--data", str(data),
               "--out", str(run), "--max-minutes", f"{max(left - grace - args.startup_s, 1.0) / 60:.3f}"]
        if (run / "checkpoints" / "latest").is_file():
            cmd.append("--resume")
        res = run_child(cmd, left - grace, log=out / "train.log", grace=grace)
        res["data"] = "device_data" if cfg.get("device_data") and not args.data else str(data)
        res.update(train_summary(run, cfg))
        newest = latest_restorer(run)
        if newest is not None:
            publish(newest, out)
            res["checkpoint"] = str(newest.relative_to(out))
        if res.get("rc") not in (0, None) or res.get("steps", 0) == 0:
            res["log_tail"] = _tail(out / "train.log")
        return res

    if not args.skip_train:
        section("train", train)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["elapsed_s"] = round(budget.elapsed(), 2)
    write_json(report_path, report)
    return report


def _embedded_checkpoint() -> Path | None:
    from iconface_video.weights import find_model_file

    try:
        return find_model_file("restorer", "iconface-restorer.safetensors")
    except Exception:  # noqa: BLE001 - no embedded checkpoint: train from scratch
        return None


def _process_start() -> float:
    """``time.monotonic()`` of this process's creation (Linux: /proc), so the interpreter's own
    start-up counts against the budget too; elsewhere, now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.monotonic() - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic()


START = _process_start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, help="wall-clock budget of the whole command, seconds")
    parser.add_argument("--out", type=Path, help="folder for the JSON, logs, checkpoint and training run")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--kit", type=Path, default=DEFAULT_KIT, help="folder made by --make-kit (clips/, faces_pack.bin)")
    parser.add_argument("--pack", help="face pack for device_data (default: the config's, else KIT/faces_pack.bin)")
    parser.add_argument("--data", type=Path, help="identity folder for the file loader (instead of a pack)")
    parser.add_argument("--init", help="checkpoint to continue (default: the embedded one)")
    parser.add_argument("--clips", type=Path, nargs="*", help="clips to time (default: KIT/clips/*.mp4)")
    parser.add_argument("--frames", type=int, default=150, help="frames of each clip to time")
    parser.add_argument("--margin-s", type=float, default=None, help="kept free at the end (default 5%% of the budget, >= 3 s)")
    parser.add_argument("--kernels-s", type=float, default=60.0)
    parser.add_argument("--render-s", type=float, default=90.0, help="at most this per clip")
    parser.add_argument("--min-train-s", type=float, default=60.0, help="render timing leaves at least this for training")
    parser.add_argument("--startup-s", type=float, default=20.0, help="training start-up not counted by --max-minutes")
    parser.add_argument("--stop-grace-s", type=float, default=20.0, help="from SIGTERM to SIGKILL of the training")
    parser.add_argument("--skip-kernels", action="store_true")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--make-kit", type=Path, help="copy --pack and the clips from --media into this folder, then exit")
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--stage", choices=["render"], help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage == "render":
        result = render_stage(args.clip, args.frames, args.work, args.device, args.init)
        write_json(args.work / "render.json", result)
        return 0
    if args.make_kit:
        if not args.pack:
            parser.error("--make-kit needs --pack")
        print(json.dumps(make_kit(args.make_kit, Path(args.pack), args.media), indent=1))
        return 0
    if args.budget_s is None or args.out is None:
        parser.error("--budget-s and --out are required")
    if args.margin_s is None:
        args.margin_s = max(3.0, 0.05 * args.budget_s)
    if args.pack is None and not args.data and (args.kit / "faces_pack.bin").is_file():
        args.pack = str((args.kit / "faces_pack.bin").resolve())
    report = window(args)
    print(json.dumps(report, indent=1, default=str), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every output is written and closed; skip the interpreter's tear-down (seconds with torch
    # loaded on a busy machine), which would otherwise run outside the budget.
    os._exit(code)
