"""Assets by stage: ingestion (raw → cleaned), features, training (params → model), predictions, monitoring."""
