"""The package's version, in a module of its own: only what records it (the cube's
attributes, ``--version``) imports it, so a version bump reruns no training."""

__version__ = "0.2.0"
