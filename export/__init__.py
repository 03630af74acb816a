"""Exporters (installed as facegen_rt.export)."""
