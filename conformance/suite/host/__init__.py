"""Host readiness: what a host must offer before container primitives can be checked on it."""
