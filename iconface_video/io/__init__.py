"""Video I/O: probe, streaming decode with timestamps, encode and remux that keep everything."""
