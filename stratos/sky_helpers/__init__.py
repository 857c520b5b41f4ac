"""Scripts run with the SkyPilot venv's python (stratos/provision/sky.py); never imported by Stratos."""
