"""robustlab.corruptions."""
