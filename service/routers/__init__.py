"""One router per resource; create_app includes them all."""

from service.routers import engines, estimates, gpus, health, models, page, probes

__all__ = ["engines", "estimates", "gpus", "health", "models", "page", "probes"]
