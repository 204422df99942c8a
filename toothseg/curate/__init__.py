"""Curation: duplicate groups, conflicting-label resolution and group-aware folds."""
