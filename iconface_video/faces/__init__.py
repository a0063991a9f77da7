"""Face analysis: detection with 5 landmarks, alignment, identity embeddings, soft masks."""
