"""Layer 3: rollups (incremental, exact) and freshness."""
