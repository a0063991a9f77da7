"""Training and evaluation of the restoration core."""
