"""throttle's test suite."""
