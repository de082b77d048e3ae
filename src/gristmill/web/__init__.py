"""Templates and assets of the dashboard (server-rendered; Plotly from the installed package,
never a CDN)."""

from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"
