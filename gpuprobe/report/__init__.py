"""Renderers: they read the result model and never change it."""
