# The build service's entry points. `make demo` runs the main job on a fresh
# machine; `make test` runs every test against a real local stack.
SHELL := /bin/bash
STACK := $(CURDIR)/.stack
BIN := $(STACK)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0

.PHONY: proto
## proto: regenerate the Go code of proto/ (protoc from Debian, plugins at pinned versions)
proto:
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(BIN):$$PATH protoc -I proto -I third_party/googleapis \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/build/v1/build.proto

.PHONY: lint-proto
## lint-proto: buf lint (STANDARD) on proto/, with buf.yaml's documented exceptions
lint-proto:
	bash scripts/lint-proto.sh

# ---- local stack (scripts/, state in .stack/) --------------------------------

.PHONY: up down images demo test bench
## up: start the local stack (registry, buildkitd, git daemon, build server); idempotent
up:
	bash scripts/up.sh
## down: stop the local stack (state in .stack/ is kept)
down:
	bash scripts/down.sh
## images: build and push the builder and base images if the registry lacks them
images:
	bash scripts/images.sh
## demo: build testdata/sampleapp from git into an image, check it and run it
demo:
	bash scripts/demo.sh
## test: go vet, unit tests (server coverage printed), fuzz, buf lint, then the integration tests against the local stack
test:
	bash scripts/test.sh
## bench: warm rebuilds of 3 generated repos: the service vs ko, a Dockerfile and go build + crane (medians of 3), 4 concurrent builds, then the fan-out bench
bench:
	bash scripts/bench.sh

# ---- mutation testing (slow; not part of `make test`; needs no stack) --------

.PHONY: mutate
## mutate: gremlins mutation testing of llb, server, progress with their unit tests; kill rate per package
mutate:
	bash scripts/mutate.sh
