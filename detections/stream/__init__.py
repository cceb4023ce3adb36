"""The detection pass as a Spark application: the job (the only reader of the events
topic), parsing, the session, the executor-side worker, the derived-stream publisher, the
status file and the batch query; and the streaming-stage contract the three queries share."""
