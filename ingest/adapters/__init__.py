"""Adapters turn real-world Windows log formats into schema events.

Each adapter only extracts the Windows header and the event-data fields from its format;
``windows.to_event`` does the one mapping to the contract that they all share.
"""

from ingest.adapters.windows import AdapterError, WindowsRecord, to_event

__all__ = ["AdapterError", "WindowsRecord", "to_event"]
