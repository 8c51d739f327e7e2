"""Shared test fixtures."""

from tests.brokers import broker, embedded_broker, mosquitto_broker
from tests.postgres_server import postgres_database, private_postgres

__all__ = ["broker", "embedded_broker", "mosquitto_broker", "postgres_database", "private_postgres"]
