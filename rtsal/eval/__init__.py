"""Faithfulness evaluation: deletion/insertion, average drop/increase and pointing (see docs/design.md)."""
