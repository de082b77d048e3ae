"""Layer 3: the metric layer: time ranges, query model, SQL compiler, rollup-aware planner."""
