"""apkit.compression."""
