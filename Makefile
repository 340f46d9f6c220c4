# icebox build and test entry points. `make test` is what CI runs.

GO      ?= go
# Fuzz budgets are counts, not durations: go1.26's fuzz coordinator can
# report a bare "context deadline exceeded" failure when a duration runs out
# while a worker is busy (go.dev/issue/75804, fixed in go1.27), which a
# loaded CI machine hits now and then. A count has no deadline to race.
FUZZTIME ?= 20000x
FUZZMINIMIZETIME ?= 500x
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

PLATFORMS := linux/amd64 linux/arm64 linux/arm/7

.PHONY: test fuzz build release sizes clean bench

# All tests with the race detector, the allocation counts (which the race
# detector skews) without it, every fuzz target briefly over its checked-in
# corpus plus fresh inputs, then the release builds for the edge platforms,
# so CI proves they still compile.
test:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Allocs|AllocatesNothing' ./stunsrv ./turnsrv ./signal
	$(MAKE) fuzz
	$(MAKE) release sizes

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target, $(FUZZTIME)"; \
	    $(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) $$pkg; \
	  done; \
	done

# icebox against coturn on this machine: server CPU-µs per operation for
# relayed round trips (UDP ChannelData in two shapes, Send/Data, TCP
# ChannelData), STUN Binding and allocation create+delete, median of three
# rounds, and memory per idle allocation. Needs coturn and taskset.
bench:
	GO=$(GO) bench/compare.sh

# The binary for this machine.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/icebox ./cmd/icebox

# Static, stripped binaries for VMs and edge boxes: bin/icebox-linux-amd64,
# bin/icebox-linux-arm64, bin/icebox-linux-armv7.
release:
	@set -e; for p in $(PLATFORMS); do \
	  os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=$${rest#*/}; \
	  name=$$os-$$arch; [ "$$arch" = arm ] && name=$$name"v"$$arm; \
	  echo "build bin/icebox-$$name"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$( [ "$$arch" = arm ] && echo $$arm ) \
	    $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/icebox-$$name ./cmd/icebox; \
	done

sizes:
	@ls -l bin/icebox-* | awk '{printf "%-28s %6.1f MiB\n", $$9, $$5/1048576}'

clean:
	rm -rf bin
