"""The IConFace restoration core: identity-structure asymmetric conditioning at trainable scale."""
