# Tether: the two commands README.md opens with are `make run` and `make test`.
SWIFT ?= swift

.PHONY: deps build run test bench fuzz package package-test fleet-sim clean

deps:            ## install the Debian packages Tether needs, when missing
	@scripts/install-deps

build: deps      ## build tether (debug)
	$(SWIFT) build --product tether
	$(SWIFT) build --product tether-fetch
	$(SWIFT) build --product platform-sim

run: build       ## the walk-through: validate, plan, apply, drift on the bundled example
	@scripts/demo

test:            ## the whole test suite (real git repositories, real certificates, TLS servers on loopback, SQLite on disk)
	@scripts/install-deps --test
	$(SWIFT) test

bench: deps      ## what an endpoint pays (size, start-up, a no-change run and cycle) against a static Swift hello; validate/plan timings on 100/1,000/10,000 policies; idle CPU; connector throughput over mutual TLS; the exec latency execution prevention adds
	$(SWIFT) build -c release --static-swift-stdlib --product tether
	$(SWIFT) build -c release --static-swift-stdlib --product tether-fetch
	$(SWIFT) build -c release --static-swift-stdlib --product tether-bench
	$(SWIFT) build -c release --static-swift-stdlib --product platform-sim
	python3 scripts/bench.py --tether .build/release/tether
	@echo
	.build/release/tether-bench

SECONDS ?= 60
fuzz: deps       ## libFuzzer (with address sanitizer) on the policy decoder, the health endpoint's request reader, the vendor's settings reader and the snapshot and report readers, SECONDS each
	@scripts/fuzz $(SECONDS)

package: deps    ## dist/tether_<version>_<arch>.deb: static Swift runtime, stripped; unit, config, man page, completions
	@scripts/install-deps --package
	@scripts/package

package-test: package  ## the .deb on a fresh Debian 12 (debootstrap, no Swift): install, the example, run --once, upgrade (root)
	@scripts/install-deps --package-test
	@scripts/package-test

fleet-sim: deps  ## what 100 and 1,000 controllers cost one git host (git daemon, smart HTTP, the --probe-url 304), and a push to 1,000 (MQTT, bundles); root (cgroup)
	@scripts/install-deps --fleet-sim
	$(SWIFT) build -c release --product tether-bench
	$(SWIFT) build -c release --product tether
	@scripts/fleet-sim

clean:
	rm -rf .build .build-package .tether-demo .tether-bench dist
