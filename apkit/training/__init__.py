"""apkit.training."""
