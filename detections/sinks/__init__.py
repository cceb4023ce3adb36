"""Where the detection pass's output goes: the sink contract (``base.py``: buffer, flush,
``RetriableSinkError``), the Elasticsearch sinks, and the finding documents they write
(ids, grouping windows, suppressions)."""
