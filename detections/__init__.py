"""Detection: compile Sigma rules, plan them per logsource, apply them in Spark, write findings."""
