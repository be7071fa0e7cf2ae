# The churnguard prediction service as a container image.
#   docker build -t churnguard .
#   docker run -p 3000:3000 -e CHURNGUARD_API_KEYS=... \
#     -e MLFLOW_TRACKING_URI=https://mlflow.internal -e CHURNGUARD_MODEL_URI=models:/churn-crm@champion churnguard
# Dependencies come from requirements.lock, installed with the same uv version as the Makefile.
FROM python:3.11-slim

ARG UV_VERSION=0.13.9
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/app/.venv/bin:$PATH \
    CHURNGUARD_CONFIG_DIR=/app/configs \
    CHURNGUARD_STATE_DIR=/var/lib/churnguard \
    BENTOML_HOME=/var/lib/churnguard/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    CHURNGUARD_SERVICE__SERVER__HOST=0.0.0.0 \
    CHURNGUARD_SERVICE__SERVER__PORT=3000

RUN useradd --create-home --uid 10001 churnguard \
    && mkdir -p /var/lib/churnguard \
    && chown churnguard:churnguard /var/lib/churnguard

WORKDIR /app
# Locked dependencies first: this layer only changes with the lock file.
COPY requirements.lock ./
RUN python -m venv /app/.venv \
    && /app/.venv/bin/python -m pip install --quiet "uv==${UV_VERSION}" \
    && /app/.venv/bin/uv pip sync --compile-bytecode --python /app/.venv/bin/python requirements.lock

COPY pyproject.toml ./
COPY churnguard ./churnguard
COPY service ./service
COPY training ./training
COPY monitoring ./monitoring
COPY alerts ./alerts
COPY configs ./configs
RUN /app/.venv/bin/uv pip install --compile-bytecode --python /app/.venv/bin/python --no-deps -e . \
    && /app/.venv/bin/python -m compileall -q churnguard service training monitoring alerts

# Runs as an unprivileged user (uid 10001): the code and the virtualenv are root-owned and read-only to it;
# it writes only to its state folder (prediction log, model cache for model.on_registry_error=serve_cached).
USER churnguard
VOLUME ["/var/lib/churnguard"]
EXPOSE 3000
# SIGTERM lets requests in flight finish before the workers exit: give the container at least
# server.timeout_seconds to stop (docker stop -t 130; Kubernetes terminationGracePeriodSeconds: 130).
STOPSIGNAL SIGTERM
# The model URI (CHURNGUARD_MODEL_URI) and the registry (MLFLOW_TRACKING_URI) come from the environment.
# Without CHURNGUARD_API_KEYS the service refuses 0.0.0.0 unless CHURNGUARD_SERVICE__SERVER__BEHIND_PROXY=true.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4).status != 200)"]
CMD ["python", "-m", "service.run"]
