"""The weights folder: manifest, locate and verify, resumable download, and `khala weights`."""
