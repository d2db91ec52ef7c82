# Vidurai Proxy as a container: `docker compose up -d` (compose.yaml), or
#   docker build -t vidurai-proxy . && docker run -p 127.0.0.1:8080:8080 -v vidurai:/var/lib/vidurai vidurai-proxy
# Base image pinned by version: the Python the test suite runs on (3.11), on Debian 12.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Build stage: the wheel, then it and its dependencies installed into one venv.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY proxy ./proxy
# The venv gets no pip or setuptools of its own: the image's pip installs into it.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/vidurai \
 && python -m pip --python /opt/vidurai/bin/python install /wheels/vidurai_proxy-*.whl

# Runtime stage: Python and that venv only (no source tree, no wheels, no build tools).
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/vidurai --create-home vidurai
COPY --from=build /opt/vidurai /opt/vidurai
# VIDURAI_SERVER_HOST=0.0.0.0: inside the container only, so the published port reaches the
# proxy; publish it on the host's loopback (compose.yaml does) unless an admin token is set.
ENV PATH=/opt/vidurai/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIDURAI_SERVER_HOST=0.0.0.0 \
    VIDURAI_SERVER_PORT=8080 \
    VIDURAI_STORAGE_DATABASE=/var/lib/vidurai/vidurai.db \
    VIDURAI_UI_TERMINAL=off
USER vidurai
WORKDIR /var/lib/vidurai
VOLUME ["/var/lib/vidurai"]
EXPOSE 8080
# Reads the same settings as the proxy, so it follows a changed VIDURAI_SERVER_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["vidurai-proxy", "health"]
# SIGTERM (docker stop) flushes queued metrics and snapshots sessions before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vidurai-proxy"]
