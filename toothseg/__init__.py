"""toothseg: semi-supervised tooth segmentation for dental panoramic X-rays."""

__version__ = "0.1.0"
