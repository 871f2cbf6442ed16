"""apkit.regularizers."""
