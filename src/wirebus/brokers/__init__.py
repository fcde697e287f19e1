"""Broker implementations other than Kafka (``wirebus.kafka``)."""
