"""Integrations of badged with frameworks (optional extras)."""
