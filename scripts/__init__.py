"""Standalone commands that read run folders: ``python -m scripts.<name>``."""
