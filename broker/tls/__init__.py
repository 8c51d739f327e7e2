"""TLS for the bus: a project CA with per-device client certificates, and the clients' TLS context."""
