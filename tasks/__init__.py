"""Stratos tasks."""

import stratos  # noqa: F401  (sets the offline environment before any library import)
