# One image for the simulator and the bridge: docker-compose.yml runs `iotsim run ...` and
# `iotsim bridge ...` from it, and its one-shot `secrets` service (brokers/secure/make-*.sh).
# Build: docker build -t yangquan-iotsim .
FROM python:3.11-slim

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

# The package first (pyproject.toml names README.md as its readme), so editing a scenario does not
# reinstall the dependencies.
COPY pyproject.toml README.md ./
COPY simulator ./simulator
RUN pip install . && iotsim --help >/dev/null

COPY scenarios ./scenarios

# An unprivileged user; /data holds the bridge's dead letters (a named volume in compose) and
# /app/.iotsim what a run keeps locally.
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin iotsim \
    && mkdir -p /data /app/.iotsim \
    && chown iotsim /data /app/.iotsim
USER iotsim

ENTRYPOINT ["iotsim"]
CMD ["--help"]
