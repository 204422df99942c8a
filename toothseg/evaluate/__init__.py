"""Evaluation: metrics, the evaluate verb and HTML reports."""
