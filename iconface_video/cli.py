"""The ``iconface-video`` command line.

``iconface-video movie.mp4`` runs the whole job (the ``run`` command); the other commands are
the pipeline's steps and tools. Each command lives in ``iconface_video/commands/<name>.py`` and
is imported only when used, so ``iconface-video probe`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from iconface_video import __version__
from iconface_video.errors import UserError

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
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
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
        click.echo(f"iconface-video: error: {error}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("iconface-video: interrupted; earlier outputs are intact, rerun to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("iconface-video: interrupted; earlier outputs are intact, rerun to resume", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except Exception as error:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("ICONFACE_DEBUG"):
            raise
        click.echo(
            f"iconface-video: internal error: {type(error).__name__}: {error} "
            "(rerun with ICONFACE_DEBUG=1 for the traceback, and please report it)",
            err=True,
        )
        sys.exit(1)
    # Without standalone mode click returns a command's `ctx.exit(code)` instead of exiting.
    if isinstance(code, int) and code:
        sys.exit(code)
