# syntax=docker/dockerfile:1
# Container image of the helios-orchestrator daemon (see deploy/kubernetes/README.md).
#
#   docker build -t helios-orchestrator:0.1.0 .
#   docker run --rm -p 9187:9187 \
#     -v "$PWD/orchestrator.yaml:/etc/helios-orchestrator/orchestrator.yaml:ro" \
#     -v helios-state:/var/lib/helios-orchestrator helios-orchestrator:0.1.0
#
# Runs as uid/gid 10001 (non-root) and works with a read-only root filesystem: it writes only
# to state_dir (/var/lib/helios-orchestrator, mount a volume) and /tmp. The config must set
# listen.address: 0.0.0.0 to be reachable from outside the container. No HEALTHCHECK: under
# Kubernetes the kubelet probes /healthz and /readyz (deploy/kubernetes/deployment.yaml).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY probes ./probes
RUN python -m venv /opt/helios-orchestrator/venv \
 && /opt/helios-orchestrator/venv/bin/pip install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/helios-orchestrator/venv/bin:$PATH
RUN groupadd --system --gid 10001 helios \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/helios-orchestrator \
      --no-create-home --shell /usr/sbin/nologin helios \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/helios-orchestrator \
 && install -d -m 0755 /etc/helios-orchestrator
COPY --from=build /opt/helios-orchestrator/venv /opt/helios-orchestrator/venv
# The runbooks ship with the package (<venv>/share/helios-orchestrator/runbooks, found by the
# daemon); operators' own runbooks go in a mounted directory named by failover.runbooks_dir.
USER 10001:10001
WORKDIR /var/lib/helios-orchestrator
VOLUME ["/var/lib/helios-orchestrator"]
EXPOSE 9187
ENTRYPOINT ["orchestrator"]
CMD ["run", "--config", "/etc/helios-orchestrator/orchestrator.yaml"]
