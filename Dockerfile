# lightci's own image: `docker build -t lightci:$(git rev-parse --short=12 HEAD) .`
# The base is a local tag: ./scripts/base-image makes it where no registry is reachable;
# with one, pass e.g. --build-arg BASE=python:3.11-slim-bookworm (and add git to it).
ARG BASE=lightci-base/python:3.11-bookworm

FROM ${BASE} AS build
# Extra pip arguments, e.g. "--no-index --find-links /src/wheels" for an offline build.
ARG PIP_ARGS=""
COPY . /src
RUN python3 -m venv /opt/lightci \
 && /opt/lightci/bin/pip install --no-cache-dir ${PIP_ARGS} /src

FROM ${BASE}
RUN echo 'lightci:x:10001:10001:lightci:/var/lib/lightci:/bin/sh' >> /etc/passwd \
 && echo 'lightci:x:10001:' >> /etc/group \
 && mkdir -p /var/lib/lightci \
 && chown 10001:10001 /var/lib/lightci
COPY --from=build /opt/lightci /opt/lightci
ENV PATH=/opt/lightci/bin:/usr/local/bin:/usr/bin:/bin \
    LIGHTCI_HOME=/var/lib/lightci \
    LIGHTCI_SERVER_HOST=0.0.0.0 \
    LIGHTCI_SERVER_PORT=8080 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/lightci
# The home: job table, logs, builds, secrets.env. Keep it on a volume.
VOLUME /var/lib/lightci
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['LIGHTCI_SERVER_PORT'] + '/health', timeout=4)"]
# `lightci init` leaves an existing home as it is and fills a new (empty) volume.
CMD ["sh", "-c", "lightci init \"$LIGHTCI_HOME\" >/dev/null && exec lightci serve"]
