# The worker agent as a container: python -m agent, as a normal user.
#
#   docker build -t ffrtmp-agent .
#   docker run --rm -p 9091:9091 ffrtmp-agent --master http://master:8080 --max-concurrent-jobs 4
#
# The agent handles SIGTERM itself, also as PID 1: it stops claiming, lets
# running jobs finish for --shutdown-grace (30s), then stops the encoders and
# reports them. It logs its worst-case stop time at start (50s by default):
# give the container more than that, e.g. `docker stop -t 60` or Kubernetes'
# terminationGracePeriodSeconds: 60.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 ffrtmp
WORKDIR /opt/ffrtmp-agent
COPY pyproject.toml README.rst ./
COPY agent ./agent
RUN pip install --no-cache-dir . && rm -rf /opt/ffrtmp-agent/agent

USER ffrtmp
ENV FFRTMP_WORK_DIR=/home/ffrtmp/work
EXPOSE 9091
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9091/health', timeout=4).status != 200)"]
ENTRYPOINT ["python", "-m", "agent"]
