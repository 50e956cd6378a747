# syntax=docker/dockerfile:1
#
# braze-ingestor container image: one static binary on distroless, non-root.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t braze-ingestor:dev .
#   docker run --rm braze-ingestor:dev version
#
# cmd/ingestor/build_test.go parses the `go build` line below and builds the binary with exactly
# these flags (and with the build context filtered by .dockerignore), so keep that command on one
# RUN instruction; line continuations are fine.

# The builder runs on the build machine's platform and cross-compiles (no emulation needed).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Modules first, so source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .

ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ingestor ./cmd/ingestor

# distroless/static: CA certificates, tzdata and /etc/passwd (nonroot = 65532); no shell, no
# package manager. Pin by digest in your registry mirror for reproducible deploys.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ingestor /ingestor
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# HTTP_ADDR (:8080): /livez, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/ingestor"]
CMD ["run"]
