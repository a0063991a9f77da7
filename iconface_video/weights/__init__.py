"""The model store: which weights exist, where they are looked for, checksums, licences, safe loading."""
