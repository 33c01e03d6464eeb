"""Drift triggers: Prometheus queries (I/O, `prometheus.py`) and the pure trigger
state machine (`state.py`) with hysteresis, a `for` duration, cooldown and a no-data policy."""
