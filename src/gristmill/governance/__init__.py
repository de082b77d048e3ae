"""Governance: retention enforcement, erasure with suppression, audit (docs/governance.md)."""
