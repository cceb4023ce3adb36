"""The detection engineer's workflow: validate, test, cost, backtest and coverage of Sigma
rules before they are bundled and deployed (docs/rules-workflow.md)."""
