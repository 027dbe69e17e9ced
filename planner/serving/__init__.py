"""Serving: engine profiles, serving memory, step time, capacity and the inference estimate."""
