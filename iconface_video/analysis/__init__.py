"""Video analysis: shots, face tracks, identities across shots, harvested references, the analysis file."""
