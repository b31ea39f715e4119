# The msgstatus image used by docker-compose.yml (watcher, workers, scheduler, dashboard).
FROM python:3.13-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY msgstatus ./msgstatus
COPY embedded ./embedded
COPY jobs ./jobs
COPY watcher ./watcher
RUN pip install --no-cache-dir . && useradd --system msgstatus
USER msgstatus
CMD ["msgstatus", "--help"]
