"""Test helpers: fake run folders and tiny synthetic data (no tests here)."""
