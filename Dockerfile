# One image with the service binaries and the analysts' erp-replay;
# docker-compose.yml picks a service per container with `command` (and
# `docker compose run projector projector rebuild` or `... erp-replay export`
# run the tools against the same deployment).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p command-service -p projector -p query-service -p worker -p notifier -p replay

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 erp
COPY --from=build /src/target/release/command-service /src/target/release/projector /src/target/release/query-service /src/target/release/worker /src/target/release/notifier \
     /src/target/release/erp-replay /usr/local/bin/
USER erp
