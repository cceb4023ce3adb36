"""Field drift (docs/field-drift.md): which fields arrive per logsource, against a
baseline, crossed with the rules that read them."""
