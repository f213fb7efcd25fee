"""stillroom: distill large language models into small ones, and find out who distilled yours."""

__version__ = "0.1.0"
