"""robustlab.detector."""
