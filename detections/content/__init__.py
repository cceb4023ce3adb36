"""Detection content over its lifecycle: the rule workflow (validate, test, backtest,
coverage) and deployment (signed bundles, modes, demotion, the watcher the job follows)."""
