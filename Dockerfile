# syntax=docker/dockerfile:1
# Multi-stage build on Debian 12 (bookworm), with the project's own scripts.
#   docker build -t reflexion .
#   docker run -p 50051:50051 -v reflexion-data:/data reflexion

FROM debian:bookworm AS build
WORKDIR /src
COPY . .
# The same install-and-build steps as scripts/test and scripts/demo.
RUN bash -c 'source scripts/lib.sh && ensure_packages && \
      BUILD_DIR=/src/build build reflexion-server reflexionctl'

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libabsl20220623 libgflags2.2 libgoogle-glog0v6 libgrpc++1.51 libgrpc29 \
      libprotobuf32 librocksdb7.8 libyaml-cpp0.7 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin reflexion \
 && mkdir -p /data && chown reflexion:reflexion /data
COPY --from=build /src/build/server/reflexion-server /usr/local/bin/
COPY --from=build /src/build/client/reflexionctl /usr/local/bin/
USER reflexion
VOLUME /data
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["reflexionctl", "--server", "127.0.0.1:50051", "health"]
# Listens on all interfaces of the container. CMD allows that without
# authentication for a try-out (the log warns); for real use replace it:
#   docker run ... reflexion --config /etc/reflexion/reflexion.yaml
# with auth.tokens_file and tls.* configured (README "Authentication and TLS").
ENTRYPOINT ["reflexion-server", "--data_dir", "/data", "--port", "50051", "--host", "0.0.0.0"]
CMD ["--insecure_listen"]
