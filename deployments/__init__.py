"""Prefect deployments of the distill flow (deploy.py; see README.md)."""
