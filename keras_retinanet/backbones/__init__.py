"""Backbones by name (``registry.py``) and their parts; docs/adding-a-backbone.md says what a new family touches."""
