"""Reusable pieces of the app's screens."""
