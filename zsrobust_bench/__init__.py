"""zsrobust-bench: zero-shot adversarial robustness benchmark for CLIP-style models."""

__version__ = "0.1.0"
