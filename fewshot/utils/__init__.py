"""Small utilities below everything else: atomic file writes, device resolution, seeds, run metadata."""
