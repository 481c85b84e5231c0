# badged: the daemon (`badged run`) and the one-shot commands, in a slim non-root image.
#
#   docker build -t ghcr.io/example/badged:0.1.0 .
#   docker run --rm -e BADGED_DSN=postgresql://... -v "$PWD/badge.json:/etc/badged/badge.json:ro" \
#       ghcr.io/example/badged:0.1.0 reconcile --once
#
# Stage 1 builds badged (with the `k8s` extra, so `run --configmap` works) into a venv at
# /opt/badged; stage 2 is the same base image plus that venv: no compiler, no pip, nothing
# fetched at run time. Every dependency ships manylinux wheels, so no build tools are needed
# in stage 1 either. tests/test_dockerfile.py replays stage 1's commands on the test machine.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY badged ./badged
RUN python -m venv /opt/badged
RUN /opt/badged/bin/python -m pip install --quiet '.[k8s]'
RUN /opt/badged/bin/badged --version && /opt/badged/bin/badged validate --badges badged/demo_data/badge.json
RUN /opt/badged/bin/python -m pip uninstall --quiet --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="badged" \
      org.opencontainers.image.description="PostgreSQL badge triggers reconciled from badge.json" \
      org.opencontainers.image.licenses="Apache-2.0"
# Read-only root filesystem: no bytecode written at run time (stage 1 precompiled it), HOME and
# the working directory in /tmp (an emptyDir in Kubernetes), logs unbuffered.
ENV PATH=/opt/badged/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    BADGED_BADGES=/etc/badged/badge.json
COPY --from=build /opt/badged /opt/badged
WORKDIR /tmp
USER 65532:65532
# /healthz, /readyz and /metrics (`--http`, default :8080). No HEALTHCHECK: Kubernetes probes them.
EXPOSE 8080
ENTRYPOINT ["badged"]
CMD ["run"]
