# syntax=docker/dockerfile:1
#
# Keyhold's container image, in two stages:
#   build    builds the Keyhold wheels (keyhold-client and the server) and collects a
#            wheel of every runtime dependency;
#   runtime  installs exactly those wheels into a virtual environment on a fresh base,
#            so no source tree, compiler, build backend, pip or dev dependency ships.
#
# The base is pinned by tag (readable) and by digest (immutable; a tag can be re-pushed).
# Change both together; the digest of a tag is what
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
# prints as "Digest" (the multi-architecture index).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python ./clients/python
COPY src ./src
COPY generated ./generated
# keyhold-client (the stubs and the client library) and the server that depends on it.
RUN python -m pip wheel --wheel-dir /wheels ./clients/python .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="keyhold" \
      org.opencontainers.image.description="Identity, provider-connection and audit platform spoken to over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
# The wheels are bind-mounted from the build stage, never copied into a layer; the
# environment gets no pip of its own (the base image's pip installs into it).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip /opt/keyhold \
 && python -m pip --python /opt/keyhold/bin/python install \
      --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels keyhold \
 && groupadd --system --gid 10001 keyhold \
 && useradd --system --uid 10001 --gid keyhold --no-log-init \
      --home-dir /var/lib/keyhold --create-home --shell /usr/sbin/nologin keyhold
# Listening on 0.0.0.0 without TLS is refused at start-up: mount a certificate and set
# KEYHOLD_TLS_CERT_FILE / KEYHOLD_TLS_KEY_FILE (plus KEYHOLD_TLS_HEALTH_SERVER_NAME and,
# under mutual TLS, KEYHOLD_TLS_HEALTH_CLIENT_* so the HEALTHCHECK can connect), or set
# KEYHOLD_ALLOW_PLAINTEXT=true when something in front of Keyhold encrypts the traffic.
ENV PATH=/opt/keyhold/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYHOLD_LISTEN_ADDRESS=0.0.0.0:50051 \
    KEYHOLD_HTTP_ADDRESS=0.0.0.0:8080 \
    KEYHOLD_METRICS_ADDRESS=0.0.0.0:9464 \
    KEYHOLD_DATA_DIR=/var/lib/keyhold \
    KEYHOLD_LOG_FORMAT=json \
    KEYHOLD_LOG_LEVEL=info
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/keyhold
# gRPC, and the Prometheus metrics endpoint.
EXPOSE 50051 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["keyhold", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["keyhold"]
CMD ["serve"]
