"""Transports behind one interface: ``file`` (JSONL), ``mqtt`` (paho, mutual TLS), ``greengrass``.

Modules are imported on demand so the ``file`` transport needs neither paho nor awsiotsdk.
"""

from inspector.transports.base import ConfigCallback, Transport, TransportError

__all__ = ["ConfigCallback", "Transport", "TransportError"]
