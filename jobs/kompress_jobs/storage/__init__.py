"""Where a run's files go: the artifact store (store.py, local or S3), the layout of keys and local
paths (layout.py), digests, and promotion of the pick to a stable location (promotion.py, promoted.py)."""
