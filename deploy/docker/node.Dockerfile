# The storage node image: dagraid-node, plus /dagraid for the health check (a scratch image has
# no shell and no curl). Built by deploy/build-images.sh from its staging directory, which holds
# the static binaries and an empty data/ directory; nothing is pulled.
FROM scratch
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dagraid-node" \
      org.opencontainers.image.description="dagraid storage node (static binary, FROM scratch)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
# The same first two layers in every dagraid image, so they are stored once.
COPY dagraid /dagraid
COPY --chown=10001:10001 data /data
COPY dagraid-node /dagraid-node
# No /etc/passwd: a numeric user. A new named volume mounted on /data takes this directory's owner.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 7001 9464
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/dagraid", "--timeout", "3", "health", "127.0.0.1:7001", "--service", "dagraid.storage.v1.StorageNode"]
ENTRYPOINT ["/dagraid-node"]
CMD ["--listen", "0.0.0.0:7001", "--data-dir", "/data"]
