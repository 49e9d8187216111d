# One image with the three service binaries; docker-compose.yml picks one per
# container with `command`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p command-service -p projector -p query-service

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 erp
COPY --from=build /src/target/release/command-service /src/target/release/projector /src/target/release/query-service /usr/local/bin/
USER erp
