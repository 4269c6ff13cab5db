"""Assets by domain: ingest (raw), quality (clean), analytics (aggregates, anomalies)."""
