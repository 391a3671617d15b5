# fedlens CPU image: API, orchestrator and CPU training workers (TensorFlow CPU backend for Keras 3).
#   docker build -t fedlens .
#   docker run --rm -p 8000:8000 fedlens                       # API on the embedded defaults (SQLite in /data)
#   docker compose up                                          # the full stack: see docker-compose.yml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FEDLENS_DATA_DIR=/data

WORKDIR /app

# Dependencies first, in their own layer (TensorFlow is most of the image): a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The whole repository, installed editable: app/migrate.py finds migrations/ next to the app/ package
# (Path(__file__).parents[1]), so the code must run from /app rather than from site-packages.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 --user-group fedlens \
    && mkdir -p /data /artifacts /tls \
    && chown fedlens:fedlens /data /artifacts /tls
# /data, /artifacts and /tls belong to the user, so that named volumes mounted there start out writable by it.
USER fedlens

EXPOSE 8000
CMD ["fedlens", "api", "--host", "0.0.0.0"]
