# One image for both roles: `wardgate operator` and `wardgate gateway`.
# Build:  docker build -t ghcr.io/wardgate/wardgate:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wardgate/__init__.py wardgate/cli.py wardgate/__main__.py wardgate/py.typed ./wardgate/
COPY gateway ./wardgate/gateway
COPY operator ./wardgate/operator
COPY wardgate/devcluster ./wardgate/devcluster
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels "$(ls /wheels/wardgate-*.whl)"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels wardgate \
 && rm -rf /wheels \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin wardgate
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["wardgate"]
CMD ["gateway", "--config", "/etc/wardgate/config.json", "--secrets-dir", "/etc/wardgate/secrets", "--host", "0.0.0.0"]
