"""`toothseg suggest`: which unlabelled X-rays a human should label next (uncertainty + diversity)."""
