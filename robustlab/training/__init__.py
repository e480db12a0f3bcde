"""robustlab.training."""
