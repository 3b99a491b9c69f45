# The session gateway of the AWS mode: `binderless gateway` (the /build event stream and the
# session proxy), built from this repository's package. Build from the repository root:
#   docker build -f functions/gateway.Dockerfile -t binderless-gateway .
FROM python:3.11-slim

# git fetches repositories to compute their environment key before a build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/binderless
COPY pyproject.toml README.md ./
COPY functions ./functions
COPY site ./site
COPY examples ./examples
RUN pip install --no-cache-dir . \
 && useradd --create-home --uid 10001 gateway
USER gateway
ENV BINDERLESS_MODE=aws \
    BINDERLESS_SITE_DIR=/opt/binderless/site \
    BINDERLESS_STATE_DIR=/tmp/binderless \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"
CMD ["binderless", "gateway", "--host", "0.0.0.0", "--port", "8080"]
