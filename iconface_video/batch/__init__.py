"""Many videos: a resumable batch queue, local workers per device, and Ray."""
