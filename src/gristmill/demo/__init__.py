"""Demo traffic: realistic generated events per pack, and a retrying HTTP sender."""
