"""The broker boundary: embedded broker, broker configuration, the client session."""
