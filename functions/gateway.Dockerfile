# The session gateway of the AWS mode: `binderless gateway` (the /build event stream and the
# session proxy), built from this repository's package. Build from the repository root:
#   docker build -f functions/gateway.Dockerfile -t binderless-gateway .
# The base is a build argument: any Debian image with apt and Python 3.11 or newer with venv
# works (the project's tests pass a local Debian 13 image; infra/image-build.buildspec.yml
# tags ECR Public's copy of python:3.11-slim as python:3.11-slim).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# git fetches repositories to compute their environment key before a build.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/binderless
COPY pyproject.toml README.md ./
# A virtual environment (Debian's Python refuses system-wide pip installs), with the
# dependencies in a layer that changes only with pyproject.toml.
RUN python3 -m venv /opt/venv \
 && python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); open('/tmp/requirements.txt', 'w').write('\\n'.join(p['project']['dependencies']))" \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && useradd --create-home --uid 10001 gateway
COPY functions ./functions
COPY site ./site
COPY examples ./examples
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .
USER gateway
ENV PATH=/opt/venv/bin:$PATH \
    BINDERLESS_MODE=aws \
    BINDERLESS_SITE_DIR=/opt/binderless/site \
    BINDERLESS_STATE_DIR=/tmp/binderless \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"
CMD ["binderless", "gateway", "--host", "0.0.0.0", "--port", "8080"]
