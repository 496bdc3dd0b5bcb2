"""The engine: the model's forward pass with owned hooks, the scale-end probe, preprocessing and the
FastCAM maths (see docs/design.md)."""
