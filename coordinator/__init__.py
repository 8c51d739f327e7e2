"""The fleet side: ingest, storage, anomaly detection, load balancing."""
