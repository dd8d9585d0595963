# The controller's image, as `rheostat install` runs it (plugins/kube/install.py: IMAGE, UID).
#
#   pip wheel --no-deps -w dist .      # dist/rheostat-<version>-py3-none-any.whl
#   docker build -t ghcr.io/rheostat/rheostat:0.1.0 .
#
# The base image is pinned by its full version; the wheel pins Rheostat's own dependencies (==).
FROM python:3.11.13-slim-bookworm

ARG VERSION=0.1.0

# git and ssh: `rheostat run --repo` fetches with the real git, as Flux's source-controller does.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*

COPY dist/rheostat-${VERSION}-py3-none-any.whl /tmp/
RUN pip install --no-cache-dir /tmp/rheostat-${VERSION}-py3-none-any.whl \
    && rm /tmp/rheostat-${VERSION}-py3-none-any.whl \
    && groupadd --gid 10001 rheostat \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rheostat

# A numeric user, so that the kubelet can check runAsNonRoot; the root filesystem is mounted read-only there,
# HOME and the data dir are emptyDirs (/tmp, /data).
USER 10001:10001
ENV HOME=/tmp
WORKDIR /tmp
EXPOSE 8470 9443
ENTRYPOINT ["rheostat"]
CMD ["run", "--listen", "0.0.0.0:8470", "--data-dir", "/data"]
