"""Render: batched restoration of tracked faces, temporal stability, paste-back, report."""
