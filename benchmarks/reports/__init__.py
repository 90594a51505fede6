"""Result files and what reads them: summary.json / summary.md / per_class.csv, plots, compare, README tables."""
