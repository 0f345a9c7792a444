# syntax=docker/dockerfile:1
# The build server (buildsvc-server) and its CLI (buildsvc), for
# docker-compose.yml's `server` service.
FROM golang:1.26-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# The server's data dir (the build history): empty, private, owned by the
# runtime image's nonroot user (65532:65532). Copied as a tree onto / below,
# with its owner and mode (a COPY --chown onto a new path would also give
# that user any parent directory it creates, and make the mode 0755).
RUN mkdir -p /rootfs/var/lib/buildsvc && \
    chown 65532:65532 /rootfs/var/lib/buildsvc && chmod 0700 /rootfs/var/lib/buildsvc
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/buildsvc-server ./cmd/server && \
    go build -trimpath -ldflags="-s -w" -o /out/buildsvc ./cmd/cli

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The data dir belongs to the server's user (nonroot, 65532:65532) in the
# image, so a named volume mounted on it starts as a copy of it, owned by
# that user (Docker copies an empty volume's ownership and mode from the
# image's directory); a volume of root's would leave the server unable to
# write its history.
COPY --from=build /rootfs/ /
USER 65532:65532
# Settings as env vars, which `buildsvc-server health` reads too.
ENV BUILDSVC_DATA_DIR=/var/lib/buildsvc BUILDSVC_LISTEN=0.0.0.0:17070
EXPOSE 17070
# `buildsvc-server health` asks the server's own gRPC health service (at
# its listen setting): SERVING while buildkitd answers.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/buildsvc-server", "health"]
ENTRYPOINT ["/usr/local/bin/buildsvc-server"]
