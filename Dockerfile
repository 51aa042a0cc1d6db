# The worker agent as a container: python -m agent, as a normal user.
#
#   docker build -t ffrtmp-agent .
#   docker run -d --name agent1 -e FFRTMP_NODE_NAME=agent1 -v agent1-work:/home/ffrtmp/work \
#     -p 9091:9091 --stop-timeout 60 ffrtmp-agent --master http://master:8080 --max-concurrent-jobs 4
#
# The README's "The agent in a container" says why each part is there.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 ffrtmp
WORKDIR /opt/ffrtmp-agent
COPY pyproject.toml README.rst ./
COPY agent ./agent
# With the PostgreSQL driver, the same image also runs masters that share a database
# (python -m agent master --db-dsn ...; deploy/compose.yaml does).
RUN pip install --no-cache-dir ".[postgres]" && rm -rf /opt/ffrtmp-agent/agent

USER ffrtmp
# The work dir holds inputs, outputs, results still to be delivered (outbox/) and the
# node's token (node-tokens/): on a volume, a restarted container is the same node and
# keeps its files. The agent and the HEALTHCHECK both read FFRTMP_METRICS_PORT.
ENV FFRTMP_WORK_DIR=/home/ffrtmp/work \
    FFRTMP_METRICS_PORT=9091
RUN mkdir -p /home/ffrtmp/work
VOLUME ["/home/ffrtmp/work"]
EXPOSE 9091
# First SIGTERM drains: running jobs get --shutdown-grace (30s), then their encoders
# are stopped (--kill-timeout, 10s), the results reported (up to 10s) and the node
# deregistered (up to 10s): 60s at worst with the defaults, as the agent logs at
# start. docker stop waits 10s unless told
# (--stop-timeout 60 above, docker stop -t 60, Compose stop_grace_period: 60s,
# Kubernetes terminationGracePeriodSeconds: 60).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('FFRTMP_METRICS_PORT', '9091'); sys.exit(urllib.request.urlopen('http://127.0.0.1:' + port + '/health', timeout=4).status != 200)"]
ENTRYPOINT ["python", "-m", "agent"]
