"""The ``iconface-video`` command line.

``iconface-video movie.mp4`` runs the whole job (the ``run`` command); the other commands are
the pipeline's steps and tools. Each command lives in ``iconface_video/commands/<name>.py`` and
is imported only when used, so ``iconface-video probe`` does not pay for importing torch.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from iconface_video import __version__
from iconface_video.errors import OutputError, UserError
from iconface_video.files import shown

# name -> (module, one-line help). The module defines a click command called ``command``.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("iconface_video.commands.run", "Restore every face in a video (the default command)."),
    "probe": ("iconface_video.commands.probe", "Show a video's container, streams, timing and colour tags."),
    "faces": ("iconface_video.commands.faces", "Detect faces in an image or a video frame."),
    "analyze": ("iconface_video.commands.analyze", "Find shots, face tracks, identities and references; write the analysis file."),
    "render": ("iconface_video.commands.render", "Restore a video from an (optionally hand-edited) analysis file."),
    "models": ("iconface_video.commands.models", "List, fetch and verify model weights."),
    "train": ("iconface_video.commands.train", "Train a restoration core."),
    "eval": ("iconface_video.commands.eval", "Evaluate a restoration core on held-out identity photos."),
    "batch": ("iconface_video.commands.batch", "Restore many videos through a resumable queue."),
    "doctor": ("iconface_video.commands.doctor", "Check torch, CUDA, Triton, codecs, weights and disk."),
}
DEFAULT_COMMAND = "run"
_GROUP_OPTIONS = ("-h", "--help", "--version")


class PipelineGroup(click.Group):
    """A group whose commands load lazily and whose default command is ``run``.

    ``iconface-video movie.mp4 -o out.mp4`` is read as ``iconface-video run movie.mp4 -o out.mp4``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table above, so `--help` imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # As in ffmpeg-style tools, the main command's options may come before the file
        # (`iconface-video -o out.mp4 movie.mp4`), and `--` ends the options (`-- -odd name.mp4`);
        # only the group's own --help/--version stay the group's.
        if args and args[0] not in COMMANDS and args[0] not in _GROUP_OPTIONS:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iconface-video")
def cli() -> None:
    """Restore the faces in a video: same length, audio, timing and colour; sharper faces.

    \b
    iconface-video movie.mp4                 # -> movie.restored.mp4 beside it
    iconface-video analyze movie.mp4         # -> movie.iconface.json (+ contact sheets)
    iconface-video render movie.iconface.json
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    try:
        code = cli.main(args=argv, prog_name="iconface-video", standalone_mode=False)
    except UserError as error:
        _error_line(str(error), error.exit_code)
    except click.exceptions.Abort:
        click.echo("iconface-video: interrupted; earlier outputs are intact, rerun to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("iconface-video: interrupted; earlier outputs are intact, rerun to resume", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as error:  # no arguments at all: the help, as asked
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.UsageError as error:
        # One line like every other error (click's own adds the usage and a hint on two more).
        command = error.ctx.command_path if error.ctx is not None else "iconface-video"
        _error_line(f"{_one_line(error.format_message())} (see {command} --help)", error.exit_code)
    except click.exceptions.ClickException as error:
        _error_line(_one_line(error.format_message()), error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except OSError as error:
        # The machine, not the program: a full disk, a read-only folder, a name the file
        # system refuses. One line that says which and where; the rerun resumes.
        message = _os_error_line(error)
        if message is None or os.environ.get("ICONFACE_DEBUG"):
            _internal_error(error)
        _error_line(message, OutputError.exit_code)
    except Exception as error:  # a bug, not bad input: still one line unless asked for more
        _internal_error(error)
    # Without standalone mode click returns a command's `ctx.exit(code)` instead of exiting.
    if isinstance(code, int) and code:
        sys.exit(code)


def _error_line(message: str, code: int) -> None:
    # `shown`: a file name that is not UTF-8 must not turn the message itself into a crash.
    click.echo(f"iconface-video: error: {shown(message)}", err=True)
    sys.exit(code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _internal_error(error: Exception) -> None:
    if os.environ.get("ICONFACE_DEBUG"):
        raise error
    click.echo(
        f"iconface-video: internal error: {type(error).__name__}: {shown(str(error))} "
        "(rerun with ICONFACE_DEBUG=1 for the traceback, and please report it)",
        err=True,
    )
    sys.exit(1)


# errno -> what to do about it; other OS errors are bugs until shown otherwise.
_OS_ERROR_ADVICE = {
    errno.ENOSPC: "the disk is full; free space and rerun (finished work is kept)",
    errno.EDQUOT: "the disk quota is used up; free space and rerun (finished work is kept)",
    errno.EROFS: "the file system is read-only; choose another output folder",
    errno.EACCES: "permission denied; check the permissions or choose another output folder",
    errno.EPERM: "operation not permitted; check the permissions or choose another output folder",
    errno.ENAMETOOLONG: "a file name is too long for the file system; choose a shorter name with -o",
    errno.EIO: "an input/output error from the disk; check the device and rerun",
}


def _os_error_line(error: OSError) -> str | None:
    advice = _OS_ERROR_ADVICE.get(error.errno)
    if advice is None:
        return None
    where = error.filename if error.filename is not None else ""
    return f"{os.fsdecode(where)}: {advice}" if where else advice
