"""Layer 3: move log batches into the warehouse exactly once in effect."""

from gristmill.load.conservation import Conservation, SourceBalance, conservation
from gristmill.load.loader import Loader

__all__ = ["Conservation", "Loader", "SourceBalance", "conservation"]
