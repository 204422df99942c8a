"""Training: datasets, augmentation, losses, the Lightning module and the k-fold engine."""
