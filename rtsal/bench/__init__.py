"""The timing harness behind ``rtsal bench`` and the scripts in ``benchmarks/``."""
