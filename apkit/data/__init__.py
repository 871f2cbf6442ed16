"""apkit.data."""
