"""iconface-video: restore the faces in a video, keeping everything else as it was."""

__version__ = "0.1.0"
