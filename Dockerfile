# syntax=docker/dockerfile:1
# Multi-stage: build a virtual environment with Keyhold installed, then copy only that
# into a slim runtime image that runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/keyhold
COPY pyproject.toml README.md ./
COPY src ./src
COPY generated ./generated
RUN /opt/keyhold/bin/pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 keyhold \
 && useradd --system --uid 10001 --gid keyhold --home-dir /var/lib/keyhold --create-home keyhold
COPY --from=build /opt/keyhold /opt/keyhold
ENV PATH=/opt/keyhold/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYHOLD_LISTEN_ADDRESS=0.0.0.0:50051 \
    KEYHOLD_DATA_DIR=/var/lib/keyhold \
    KEYHOLD_LOG_FORMAT=json
USER keyhold:keyhold
WORKDIR /var/lib/keyhold
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["keyhold", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["keyhold"]
CMD ["serve"]
