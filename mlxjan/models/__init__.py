"""Model store (data dir, manifests), catalog of known models, and fetching."""
