"""Reproducible experiments built on the public API (``python -m lightclip.experiments.<name>``)."""
