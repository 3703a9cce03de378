"""Subcommands of the ``retinanet`` command, one module each."""
