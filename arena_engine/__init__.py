"""arena-engine: fast, crash-safe LLM arena evaluations."""

__version__ = "0.1.0"
