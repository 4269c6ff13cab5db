"""Bridges from the protocols real sensors speak (MQTT) into the platform's Kafka topics."""
