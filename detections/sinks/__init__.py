"""Where the detection job's output goes."""
