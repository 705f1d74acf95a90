# The CLI image: the `dagraid` command line tool alone. Run it on the cluster's network, e.g.
#   docker compose run --rm cli status
# (deploy/docker-compose.yml sets DAGRAID_COORDINATOR and DAGRAID_TOKEN for it). Built by
# deploy/build-images.sh from its staging directory; nothing is pulled.
FROM scratch
ARG REVISION=unknown
LABEL org.opencontainers.image.title="dagraid-cli" \
      org.opencontainers.image.description="dagraid command line tool (static binary, FROM scratch)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
COPY dagraid /dagraid
USER 10001:10001
ENTRYPOINT ["/dagraid"]
CMD ["--help"]
