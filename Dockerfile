# syntax=docker/dockerfile:1

# --- builder: a self-contained virtualenv with Pixforge installed (non-editable) ---------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# pyproject.toml names README.md as the package readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .

# --- runtime: the venv, the migrations and nothing else -------------------------------------------
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PIXFORGE_ALEMBIC_INI=/app/alembic.ini \
    DATA_DIR=/app/data \
    HOST=0.0.0.0
# ENVIRONMENT is deliberately not set here: docker-compose.yml (or the deployer) chooses it.

# DejaVu Sans: the invoice PDFs print buyers' names and addresses in any script (INVOICE_FONT_PATH).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 pixforge \
    && useradd --system --uid 10001 --gid pixforge --home-dir /app --no-create-home --shell /usr/sbin/nologin pixforge

WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
COPY alembic.ini ./alembic.ini
COPY alembic ./alembic
RUN mkdir -p /app/data && chown -R pixforge:pixforge /app/data

USER 10001:10001

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Apply migrations, then hand PID 1 to the server so it receives SIGTERM directly.
CMD ["sh", "-c", "pixforge migrate && exec pixforge serve"]
