"""apkit.bench."""
