"""Two-phase commit bound to MQTT, clocks and storage: the participant driver, the client, resources."""
