"""Layer 0: types and helpers every other layer may import; imports nothing from gristmill."""
