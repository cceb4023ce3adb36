"""``sigstream sensor``: a user-mode Linux sensor (no kernel module, no kernel code).

Collectors read what the kernel already offers to user space (the process-events
connector over netlink, procfs, ...), turn it into plain observations, and the sensor's
agent (``ingest.agent.SensorAgent``) numbers, spools and ships them through the gateway.
"""
