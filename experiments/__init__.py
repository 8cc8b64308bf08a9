"""Scaling study, additivity analysis, warm-start study, benchmarks and the end-to-end demo."""
