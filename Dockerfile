# syntax=docker/dockerfile:1
# One image for the simulator and the bridge: docker-compose.yml runs `iotsim run ...` and
# `iotsim bridge ...` from it, and its one-shot `secrets` service (brokers/secure/make-*.sh).
# Build: docker build -t yangquan-iotsim .      (BuildKit: Docker Engine 23+, or Docker Desktop)
#
# Two stages, so it builds on linux/amd64 and linux/arm64 alike: `wheels` has a C compiler and makes
# a wheel of the package and of every dependency (on arm64 hdrhistogram has no published wheel of a
# release >= 0.10 and builds from its sdist here); the runtime stage installs only from those wheels
# and carries no compiler. tests/test_image_platforms.py proves which dependencies need the compiler.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The dependencies first (pyproject.toml names README.md as its readme), so editing the code does not
# rebuild them: the package's own wheel is made in a second step.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >requirements.txt \
    && pip wheel --wheel-dir /wheels -r requirements.txt
COPY simulator ./simulator
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# openssl and mosquitto_passwd (Debian's `mosquitto` package) for the `secrets` service, which makes
# the test CA and the password file. Here rather than a third image: the broker's image (Alpine) is
# not documented to carry the openssl command, and these Debian packages are the ones the tests run
# the same scripts with (tests/test_compose_secure.py). The broker itself is not started here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl mosquitto \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only the wheels stage's wheels (--no-index): nothing is compiled or fetched here, and the wheels stay
# out of the image's layers (a bind mount, not a COPY).
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels yangquan-iot-testbed \
    && iotsim --help >/dev/null

COPY scenarios ./scenarios

# An unprivileged user; /data holds the bridge's dead letters (a named volume in compose) and
# /app/.iotsim what a run keeps locally. COPY keeps the checkout's modes: from a checkout made with
# umask 077 the scenarios would be root's alone, hence the chmod.
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin iotsim \
    && mkdir -p /data /app/.iotsim \
    && chown iotsim /data /app/.iotsim \
    && chmod -R a+rX /app/scenarios
USER iotsim

ENTRYPOINT ["iotsim"]
CMD ["--help"]
