"""Run the real ``iconface-video`` entry point inside a test (not a test module itself)."""

from __future__ import annotations

from iconface_video.cli import main


def cli_exit_code(args) -> int:
    """Exit code of the real entry point (0 when it returns normally)."""
    try:
        main([str(a) for a in args])
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command line."""
    code = cli_exit_code(args)
    out, err = capsys.readouterr()
    return code, out, err
