"""Data layer: readers, dataset layouts, validation and the synthetic X-ray generator."""
