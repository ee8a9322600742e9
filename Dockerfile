# gradcheck service image: a venv built from uv.lock, then a slim runtime stage.
#
#   docker build -t gradcheck .
#   docker run --rm -p 8000:8000 gradcheck
#
# Where no registry can be reached, build on a stand-in base made from Debian
# packages (scripts/local-base-image.sh) and use the host's network:
#
#   scripts/local-base-image.sh
#   docker build --network host --build-arg PYTHON_IMAGE=gradcheck-python-base:bookworm -t gradcheck .
#   docker run --rm --network host -e PORT=8000 gradcheck
#
# Works on the official image (python at /usr/local/bin/python3) and on the
# stand-in (Debian's /usr/bin/python3): the venv is made from whichever
# `python3` is on PATH, at the same path (/opt/venv) in both stages, and both
# stages start from the same base image. Only plain Dockerfile syntax is used,
# so the legacy builder of an old engine builds it as well as BuildKit does.
#
# Runtime settings, all from the environment:
#   PORT (8000), HOST (0.0.0.0)   where uvicorn listens (also read by HEALTHCHECK)
#   WEB_CONCURRENCY (1)           uvicorn worker processes (more than one: metrics
#                                 are summed through PROMETHEUS_MULTIPROC_DIR)
#   UVICORN_LIMIT_CONCURRENCY (200)  uvicorn answers 503 beyond this many connections
#                                 or tasks at once, per worker
#   UVICORN_TIMEOUT_KEEP_ALIVE (75)  seconds an idle keep-alive connection stays open
#                                 (uvicorn reads every UVICORN_* variable itself; it
#                                 bounds neither the size nor the time of a request's
#                                 headers with httptools: put nginx in front,
#                                 deploy/nginx, as compose and Kubernetes do)
#   GRADCHECK_*                   service limits (app/core/config.py)
#   GRADCHECK_GUIDE_DIR (/srv/gradcheck/guide)  the built docs, served at /guide/;
#                                 messages link there (absolute, from the request's
#                                 base URL) unless GRADCHECK_DOCS_URL names a site
#   FORWARDED_ALLOW_IPS (127.0.0.1)  proxies whose X-Forwarded-Proto/-For uvicorn
#                                 trusts (--proxy-headers): the scheme of those links
#   MALLOC_ARENA_MAX (2), MALLOC_MMAP_THRESHOLD_ (32 MiB), MALLOC_TRIM_THRESHOLD_ (64 MiB)
#                                 glibc's malloc keeps freed memory for the next
#                                 request's arrays instead of returning it to the
#                                 kernel (the same values as the Makefile, compose
#                                 and deploy/kubernetes; tests/core/test_allocator.py)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------- uv stage
FROM ${PYTHON_IMAGE} AS uv

# Same uv as the Makefile, so the lock is read the same way.
ARG UV_VERSION=0.13.9

# Certificates: use the system store (where TLS is intercepted, the stand-in
# base carries the host's CA bundle there; the official image has Debian's).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_SYSTEM_CERTS=true \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv

# uv itself lives in a throwaway venv of its own (no system pip needed, no
# "externally managed" refusal); it is not copied to the final stage.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}" \
 && /opt/uv/bin/uv --version

# ------------------------------------------------------------- guide stage
# The MkDocs site (docs/, mkdocs.yml, the examples it includes), built strictly,
# served by the service at /guide/ (GRADCHECK_GUIDE_DIR) so that the links in its
# messages open. MkDocs and its theme come in a venv of their own, at the
# versions of uv.lock; nothing of this stage but the built pages is kept.
FROM uv AS guide
WORKDIR /src
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv export --frozen --all-groups --no-hashes --no-emit-project \
        --output-file /tmp/locked.txt \
 && /opt/uv/bin/uv venv --python "$(command -v python3)" /opt/mkdocs \
 && /opt/uv/bin/uv pip install --python /opt/mkdocs/bin/python \
        --constraint /tmp/locked.txt mkdocs mkdocs-material
COPY mkdocs.yml ./
COPY docs/ docs/
COPY examples/ examples/
RUN NO_MKDOCS_2_WARNING=1 /opt/mkdocs/bin/mkdocs build --strict --site-dir /srv/guide

# ---------------------------------------------------------------- build stage
FROM uv AS builder

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv venv --python "$(command -v python3)" /opt/venv \
 && /opt/uv/bin/uv sync --frozen --no-dev --no-install-project \
 && /opt/venv/bin/python -c "import fastapi, uvicorn, numpy, orjson; print('deps ok')"

# The application is not installed as a package: it runs from /srv/gradcheck
# (uvicorn puts the working directory on sys.path).
COPY app/ /srv/gradcheck/app/
RUN /opt/venv/bin/python -m compileall -q /srv/gradcheck/app

# -------------------------------------------------------------- final stage
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" gradcheck \
 && useradd --system --uid "${APP_UID}" --gid gradcheck --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gradcheck

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /srv/gradcheck /srv/gradcheck
COPY --from=guide /srv/guide /srv/gradcheck/guide
COPY deploy/docker/entrypoint.sh /usr/local/bin/gradcheck-entrypoint

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=1 \
    UVICORN_LIMIT_CONCURRENCY=200 \
    UVICORN_TIMEOUT_KEEP_ALIVE=75 \
    GRADCHECK_GUIDE_DIR=/srv/gradcheck/guide \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=67108864

WORKDIR /srv/gradcheck
# Numeric, so that Kubernetes' runAsNonRoot can check it without a runAsUser.
USER ${APP_UID}:${APP_UID}
EXPOSE 8000

# No curl in the image: the venv's Python asks /healthz on loopback.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# The entrypoint maps HOST / PORT onto uvicorn's UVICORN_HOST / UVICORN_PORT, gives
# several workers a shared Prometheus directory, then execs the command: uvicorn is
# PID 1 and gets SIGTERM directly. uvicorn reads WEB_CONCURRENCY (workers) itself.
ENTRYPOINT ["/bin/sh", "/usr/local/bin/gradcheck-entrypoint"]
CMD ["uvicorn", "app.main:app", "--proxy-headers", "--timeout-graceful-shutdown", "20"]
