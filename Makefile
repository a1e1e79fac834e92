# berth: `make help` lists the targets.
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Static binaries (libseccomp.a and glibc's libc.a; no NSS, so osusergo and
# netgo): berthd starts twice per container (the command and the container
# init), and the dynamic loader cost 0.4 ms each time.
STATIC := -linkmode external -extldflags -static
LDFLAGS := -s -w -X github.com/berth-containers/berth/internal/version.Version=$(VERSION) $(STATIC)
TAGS := osusergo,netgo
# berth-monitor (cmd/monitor), the C program a shim becomes once its
# container runs: static, so that it maps no shared library.
MONITOR_CFLAGS := -Os -static -s -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2
STATICCHECK_VERSION := v0.8.2
BIN := $(CURDIR)/.cache/bin

.PHONY: help build test unit lint bench demo prereqs clean install uninstall

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: build ## install binaries, systemd units, /etc/berth/daemon.json, the berth group (PREFIX, DESTDIR)
	@scripts/install.sh install

uninstall: ## remove what install put (data and /etc/berth stay unless PURGE=1)
	@scripts/install.sh uninstall

prereqs: ## install missing Debian packages (idempotent)
	@scripts/install-prereqs.sh

build: ## build bin/berthd, bin/berth and bin/berth-monitor
	$(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)' -o bin/berthd ./cmd/daemon
	$(GO) build -trimpath -tags $(TAGS) -ldflags '$(LDFLAGS)' -o bin/berth ./cmd/client
	$(CC) $(MONITOR_CFLAGS) -o bin/berth-monitor cmd/monitor/monitor.c

# Static test binaries too: a test binary is also the container init, and
# exec runs it inside containers, which have no dynamic loader.
test: prereqs build ## run every test, unit and integration (as root)
	$(GO) test -tags $(TAGS) -ldflags '$(STATIC)' -count=1 -timeout 20m ./...

unit: ## run the tests that need no root
	$(GO) test -count=1 -run 'Validate|Parse|Default' ./...

lint: ## gofmt, go vet and staticcheck; gcc's static analyzer on berth-monitor
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@test -x $(BIN)/staticcheck || GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(BIN)/staticcheck ./...
	$(CC) -fanalyzer -Wall -Wextra -Werror -O1 -c -o /dev/null cmd/monitor/monitor.c

bench: build ## benchmarks against crun, runc, podman, docker and skopeo (needs root; installs the peers)
	bench/runtime.sh
	bench/image.sh
	bench/daemon.sh
	bench/build.sh
	bench/network.sh

demo: prereqs build ## run a container from a busybox bundle and show its output
	scripts/demo.sh

clean: ## remove build outputs
	rm -rf bin .cache
