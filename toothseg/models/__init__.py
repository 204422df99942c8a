"""Models by name: one factory (`create_model`) for every architecture toothseg knows."""

from toothseg.models.factory import create_model, register_model

__all__ = ["create_model", "register_model"]
