"""Chinese prompt templates (data files)."""
