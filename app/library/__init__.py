"""The song library: SQLite store, list model, and the view with drag-out."""
