# memplan service image. CPU-only PyTorch by default (the probe side runs on CPU unless a GPU build is chosen).
#
# It listens on 0.0.0.0 inside the container, so `memplan serve` refuses to start without MEMPLAN_API_KEY (no key is
# baked in). Run it with a key, the host names clients use, and the port published on loopback unless a proxy is
# in front:
#   docker run -e MEMPLAN_API_KEY="$(openssl rand -hex 32)" -e MEMPLAN_ALLOWED_HOSTS=localhost,127.0.0.1 \
#       -p 127.0.0.1:8000:8000 memplan
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEMPLAN_HOST=0.0.0.0 \
    MEMPLAN_PORT=8000

WORKDIR /app
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY planner ./planner
COPY service ./service
COPY models ./models
RUN pip install --no-cache-dir ".[probe]" && useradd --system --uid 10001 memplan \
    && mkdir -p /var/lib/memplan && chown memplan /var/lib/memplan
ENV MEMPLAN_DATABASE_URL=sqlite:////var/lib/memplan/memplan.db
USER memplan

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["memplan", "serve"]
