"""apkit.metrics."""
