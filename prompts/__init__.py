"""Prompt templates per language, shipped as package data (loaded by lib.templates.prompts)."""
