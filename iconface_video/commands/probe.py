"""``iconface-video probe FILE``: container, streams, timing, rotation and colour tags."""

from __future__ import annotations

import json
from pathlib import Path

import click

from iconface_video.files import shown
from iconface_video.io.probe import StreamInfo, VideoInfo, probe


@click.command(name="probe")
@click.argument("path", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the probe as one JSON object.")
def command(path: Path, as_json: bool) -> None:
    """Show FILE's container, every stream, sizes, SAR, rotation, pixel format, bit depth,
    colour tags, average and real frame rate, VFR, frame count, duration."""
    info = probe(path)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2, default=str))
    else:
        click.echo(format_table(info))


def format_table(info: VideoInfo) -> str:
    """A human-readable summary, one stream per block."""
    duration = "?" if info.duration is None else f"{info.duration:.3f} s"
    lines = [
        f"file       {shown(info.path)}",
        f"container  {info.format} ({info.format_long}), {duration}, {info.size_bytes:,} bytes"
        + (f", {info.bit_rate // 1000} kb/s" if info.bit_rate else ""),
    ]
    for key, value in info.metadata.items():
        lines.append(f"  {key}: {value}")
    for stream in info.streams:
        lines.append(_stream_line(stream, stream.index == info.video_index))
    return "\n".join(lines)


def _stream_line(s: StreamInfo, main: bool) -> str:
    head = f"#{s.index} {s.type:<8} {s.codec}" + (" (restored)" if main else "") + (" [cover]" if s.attached_pic else "")
    lang = f" lang={s.language}" if s.language and s.language != "und" else ""
    if s.type == "video":
        colour = s.colour_names()
        vfr = "VFR" if s.vfr else "CFR" if s.vfr is not None else "?"
        parts = [
            f"{s.width}x{s.height}",
            f"SAR {s.sar.numerator}:{s.sar.denominator}" if s.sar else "SAR unset",
            f"rotation {s.rotation}",
            f"{s.pix_fmt} {s.bit_depth}-bit",
            f"colour {colour['primaries']}/{colour['trc']}/{colour['space']}/{colour['range']}",
            f"fps avg {_rate(s.avg_fps)} real {_rate(s.real_fps)} {vfr}",
            f"{s.frame_count if s.frame_count is not None else s.header_frames} frames",
            f"{s.duration:.3f} s" if s.duration is not None else "",
        ]
        return head + lang + "\n    " + ", ".join(p for p in parts if p)
    if s.type == "audio":
        return head + lang + f"\n    {s.sample_rate} Hz, {s.channels} ch ({s.channel_layout})" + (
            f", {s.duration:.3f} s" if s.duration is not None else "")
    return head + lang


def _rate(rate) -> str:
    return "?" if not rate else f"{float(rate):.3f}"
