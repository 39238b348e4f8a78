"""Data layer: interaction logs, importers, splits, graphs and sampling."""
