"""robustlab.attacks."""
