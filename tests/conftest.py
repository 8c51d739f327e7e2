"""Shared test fixtures."""

from tests.brokers import broker, embedded_broker, mosquitto_broker

__all__ = ["broker", "embedded_broker", "mosquitto_broker"]
