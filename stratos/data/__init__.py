"""Data shipped with Stratos: the default GPU catalogs and the tables the cost/latency models use."""

from pathlib import Path

DATA_DIR = Path(__file__).parent
CATALOG_DIR = DATA_DIR / "catalogs"
