"""One router per resource; create_app includes them all."""

from service.routers import estimates, gpus, health, models, probes

__all__ = ["estimates", "gpus", "health", "models", "probes"]
