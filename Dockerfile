# The Ordinal image: `ordinal-node` (the replica) and `ordinal` (the client tool) on Debian.
#
# It packages binaries built by cargo on the host (`bash scripts/docker-image.sh` builds them,
# copies them into dist/ and builds this image), so it needs no Rust image and builds with the
# legacy builder as with BuildKit. With a registry, the base is pulled as usual; without one,
# scripts/docker-image.sh makes `debian:bookworm-slim` locally with debootstrap. The binaries
# link against glibc: build them on Debian bookworm (or older), or pass a base at least as new as
# the build host (`--build-arg BASE_IMAGE=debian:trixie-slim`).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# A system user owns the data and testnet directories; named volumes mounted there inherit that
# ownership the first time, so the replicas never run as root.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ordinal \
 && mkdir -p /data /testnet \
 && chown ordinal:ordinal /data /testnet

COPY dist/ordinal-node dist/ordinal /usr/local/bin/
# Fails the build now, not at `docker compose up`, if the binaries cannot run on this base.
RUN ordinal-node --version && ordinal --version

USER ordinal
VOLUME ["/data"]
ENV ORDINAL_LOG=info
ENTRYPOINT ["ordinal-node"]
CMD ["--help"]
