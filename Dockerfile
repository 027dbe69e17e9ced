# memplan service image, two stages: wheels are built in the first, only the installed packages are kept in the
# second. CPU-only PyTorch by default (the probe side runs on CPU unless a GPU build is chosen); build with
# --build-arg WITH_PROBES=0 for an estimates-only image without torch (probes are then refused with a 422).
#
# It listens on 0.0.0.0 inside the container, so `memplan serve` refuses to start without MEMPLAN_API_KEY (no key is
# baked in). Run it with a key, the host names clients use, and the port published on loopback unless a proxy is
# in front:
#   docker run -e MEMPLAN_API_KEY="$(openssl rand -hex 32)" -e MEMPLAN_ALLOWED_HOSTS=localhost,127.0.0.1 \
#       -p 127.0.0.1:8000:8000 memplan
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
ARG WITH_PROBES=1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/memplan
ENV PATH=/opt/memplan/bin:$PATH
WORKDIR /src
RUN if [ "$WITH_PROBES" = "1" ]; then pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"; fi
COPY pyproject.toml README.md ./
COPY planner ./planner
COPY service ./service
COPY models ./models
# a regular (non-editable) install: the package data (catalog, kernel tables, the page and its Chart.js) is copied
RUN if [ "$WITH_PROBES" = "1" ]; then pip install ".[probe]"; else pip install .; fi \
    && find /opt/memplan -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/memplan/bin:$PATH \
    MEMPLAN_HOST=0.0.0.0 \
    MEMPLAN_PORT=8000 \
    MEMPLAN_DATABASE_URL=sqlite:////var/lib/memplan/memplan.db
COPY --from=build /opt/memplan /opt/memplan
RUN useradd --system --uid 10001 memplan && mkdir -p /var/lib/memplan && chown memplan /var/lib/memplan
# The probe-job store (SQLite by default): keep it across container restarts
VOLUME ["/var/lib/memplan"]
USER memplan
WORKDIR /var/lib/memplan
EXPOSE 8000
# Follows MEMPLAN_PORT (docker run -e MEMPLAN_PORT=9000 -p 9000:9000 memplan)
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MEMPLAN_PORT', '8000'), timeout=2)"
CMD ["memplan", "serve"]
