"""Which of the input's other streams (audio, subtitles, data) an output container can hold.

Checked before any encoding (``check_copyable``) and again when muxing: audio and subtitles
that cannot be copied stop the job with a one-line error; other streams are left out with a
warning.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import av

from iconface_video.errors import OutputError
from iconface_video.io.encoding import format_for
from iconface_video.io.probe import VideoInfo, open_input


def check_copyable(input_path: str | os.PathLike, output_path: str | os.PathLike, info: VideoInfo) -> list[str]:
    """Before any encoding: refuse an output container that cannot hold the input's audio or
    subtitles (they would be lost); return one-line warnings for other streams it cannot hold."""
    return [warning for _, warning in unfit_streams(input_path, output_path, info)]


def unfit_streams(input_path: str | os.PathLike, output_path: str | os.PathLike, info: VideoInfo) -> list[tuple[int, str]]:
    """(stream index, warning) for each non-video stream the output container cannot hold;
    raises ``OutputError`` for audio and subtitles."""
    fmt = format_for(output_path)
    if fmt is None:
        return []  # an unusual extension: FFmpeg guesses the muxer, and tells at the end
    unfit = []
    source = open_input(input_path)
    try:
        for stream in source.streams:
            if stream.index == info.video_index:
                continue
            error = _stream_misfit(fmt, stream)
            if error is not None:
                unfit.append((stream.index, _refuse_or_warn(stream, output_path, error)))
    finally:
        source.close()
    return unfit


def _stream_misfit(fmt: str, stream: av.stream.Stream) -> Exception | None:
    """Why a ``fmt`` file cannot hold a copy of ``stream`` (None if it can).

    Some muxers accept any stream and only object when writing the header, so the header is
    written, into memory, with this one stream.
    """
    trial = av.open(io.BytesIO(), mode="w", format=fmt)
    try:
        stream_like(trial, stream)
        trial.start_encoding()
    except (ValueError, av.error.FFmpegError) as error:
        return error
    finally:
        with contextlib.suppress(av.error.FFmpegError, ValueError):
            trial.close()
    return None


def _refuse_or_warn(stream: av.stream.Stream, output_path: str | os.PathLike, error: Exception) -> str:
    """Audio and subtitles must never be dropped silently; other streams may be, with a warning."""
    codec = stream.codec_context.name if stream.codec_context else "unknown"
    suffix = Path(output_path).suffix or "this container"
    if stream.type in ("audio", "subtitle"):
        raise OutputError(f"{output_path}: a {suffix} file cannot hold the input's {codec} {stream.type} "
                          f"(stream {stream.index}); use an .mkv output, which can")
    return f"stream {stream.index} ({stream.type} {codec}) cannot go into {suffix} and is left out ({error})"


def stream_like(out: av.container.OutputContainer, template: av.stream.Stream) -> av.stream.Stream:
    """An output stream with ``template``'s codec parameters, for copying its packets.

    Where only a decoder of another name exists (AV1 is decoded by libdav1d), the plain
    template copy fails looking up an encoder by that name; ``opaque=True`` copies the codec
    parameters without that lookup.
    """
    try:
        return out.add_stream_from_template(template)
    except ValueError:
        return out.add_stream_from_template(template, opaque=True)
