"""robustlab.evaluation."""
