# One image for both roles: `wardgate operator` and `wardgate gateway`.
# Build:  docker build -t ghcr.io/wardgate/wardgate:0.1.0 .
# `make image` (hack/build-image.sh) builds it with a Debian base made by mmdebstrap,
# passed as PYTHON_IMAGE; any image with python3 and its venv module will do.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, read from pyproject.toml alone, so that their layer is reused
# until it changes.
COPY pyproject.toml ./
RUN python3 -m venv /opt/wardgate \
 && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/wardgate/bin/pip install --requirement /tmp/requirements.txt
# Then the whole context (see .dockerignore): the wheel holds every package setuptools
# finds, so a new package cannot be forgotten here. Only the final stage's copy of the
# virtual environment reaches the image: no wheel files and no pip are left in it. The
# Kubernetes client's asyncio twin (kubernetes/aio, about 70 MB) goes too: the operator
# uses the synchronous client, and kopf its own.
COPY . .
RUN /opt/wardgate/bin/pip install --no-deps --no-build-isolation . \
 && /opt/wardgate/bin/pip uninstall --yes pip setuptools \
 && rm -rf /opt/wardgate/lib/python3*/site-packages/kubernetes/aio \
 && /opt/wardgate/bin/python -c "import wardgate.commands.operator, wardgate.commands.gateway, wardgate.commands.explain, wardgate.commands.demo" \
 && /opt/wardgate/bin/wardgate --help > /dev/null

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/wardgate/bin:$PATH
RUN groupadd --gid 65532 wardgate \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin wardgate
COPY --from=build /opt/wardgate /opt/wardgate
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["wardgate"]
CMD ["gateway", "--config", "/etc/wardgate/config.json", "--secrets-dir", "/etc/wardgate/secrets", "--host", "0.0.0.0"]
