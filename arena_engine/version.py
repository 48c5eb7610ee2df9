"""The release, in one place: the package, `--version` and the results snapshot's fingerprint read it."""

__version__ = "0.1.0"
