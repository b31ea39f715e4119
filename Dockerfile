# The msgstatus image of docker-compose.yml: watcher, workers, scheduler, dashboard and api.
# It carries no embedded servers (the `embedded` extra): compose runs a real replica set and Redis.
# tests/test_image.py replays this build without a Docker engine: it reads the COPY and RUN lines
# (and .dockerignore), so the project is copied once and what the build needs is said here only.
FROM python:3.13-slim
WORKDIR /app
COPY . .
# The exact versions the tests passed with (requirements.lock), then msgstatus itself; pip check fails
# the build when pyproject.toml asks for a package the lock does not have (refresh it: make lock).
RUN pip install --no-cache-dir -r requirements.lock \
    && pip install --no-cache-dir --no-deps . \
    && pip check \
    && useradd --system msgstatus
USER msgstatus
CMD ["msgstatus", "--help"]
