"""Conformance battery: MQTT behaviour edgebus relies on, checked against each broker."""
