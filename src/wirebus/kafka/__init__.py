"""Kafka through aiokafka: the event publisher and the consumer port.

Needs the ``kafka`` extra (``pip install 'wirebus[kafka]'``); the root
``wirebus`` package never imports it.
"""

from __future__ import annotations

from ..kafka_security import KafkaSecurity
from .consumer import KafkaConsumer, ensure_topics
from .publisher import KafkaEventPublisher

__all__ = ["KafkaConsumer", "KafkaEventPublisher", "KafkaSecurity", "ensure_topics"]
