# syntax=docker/dockerfile:1
# The build server (buildsvc-server) and its CLI (buildsvc), for
# docker-compose.yml's `server` service.
FROM golang:1.26-alpine AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/buildsvc-server ./cmd/server && \
    go build -trimpath -ldflags="-s -w" -o /out/buildsvc ./cmd/cli

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
EXPOSE 17070
ENTRYPOINT ["/usr/local/bin/buildsvc-server"]
CMD ["--listen=0.0.0.0:17070"]
