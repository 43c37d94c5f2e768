"""English prompt templates (data files)."""
