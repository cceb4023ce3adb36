"""Senders, one per destination type: ``send(notification, delivery_id)`` raises on
failure (:class:`PermanentError` when retrying cannot help). Built from the routes file's
destination config by :func:`build_sender`."""

from __future__ import annotations

from triage.alerts.destinations.base import PermanentError, Sender, SenderContext, build_sender

__all__ = ["PermanentError", "Sender", "SenderContext", "build_sender"]
