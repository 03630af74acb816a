"""Data sources for facegen_rt (synthetic datasets and loaders)."""
