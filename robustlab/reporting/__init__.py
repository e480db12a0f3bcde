"""robustlab.reporting."""
