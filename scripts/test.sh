#!/usr/bin/env bash
# Runs every test of the project, from a clean clone, the way CI does:
#   static checks, unit tests (race detector), the in-process end-to-end suite (kfake + Braze
#   simulator), the same suite against a real Apache Kafka 4.x (PLAINTEXT and SASL_SSL/SCRAM),
#   the real-broker fault tests, and a short fuzz run of the decoder.
# Everything it needs is installed or started by the project's own scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
started=$(date +%s)

step "prerequisites"
scripts/prereqs.sh
go version

step "gofmt, go vet, staticcheck, go mod tidy"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
# staticcheck from the Go module proxy, pinned; installed into GOBIN once.
staticcheck_version=v0.8.2
gobin=$(go env GOPATH)/bin
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q "${staticcheck_version#v}"; then
  GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi
"$gobin/staticcheck" ./...
if ! go mod tidy -diff >/dev/null; then
  echo "go mod tidy would change go.mod/go.sum: run it and commit the result"; go mod tidy -diff || true; exit 1
fi

step "unit tests with the race detector"
lib_pkgs=$(go list ./... | grep -v -e /cmd/ -e /bench)
go test -race -count=1 $lib_pkgs

step "commands and in-process end-to-end suite, with the race detector"
go test -race -count=1 -timeout 40m $(go list ./... | grep -e /cmd/ -e /bench)

# The race detector multiplies memory use, so the memory bound is asserted in a plain build.
step "memory bound in bytes (plain build)"
go test -count=1 -timeout 10m -run '^TestLargeRecordsMemoryBounded$' ./cmd/ingestor

step "Apache Kafka (real broker)"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
eval "$(scripts/kafka.sh env)"
export KAFKA_TEST_BROKERS KAFKA_TEST_SASL_BROKERS KAFKA_TEST_SASL_USER KAFKA_TEST_SASL_PASSWORD KAFKA_TEST_CA_FILE KAFKA_TEST_SCRAM_MECHANISM

# The end-to-end suite again, on the real broker over PLAINTEXT, then over SASL_SSL with SCRAM-SHA-512.
real_suite='^(TestEndToEnd|TestCrashLosesNothing|TestGracefulShutdownNoRedelivery|TestKill9HotUsersDuplicates|TestKill9Lifecycle|TestRealKafka.*)$'
step "end-to-end suite on Apache Kafka, PLAINTEXT"
KAFKA_TEST_SECURITY=plaintext go test -count=1 -timeout 20m -run "$real_suite" ./cmd/ingestor
step "DLQ writer, replay and DLQ stage on Apache Kafka (topics with a small max.message.bytes)"
go test -count=1 -timeout 10m -run '^(TestWriter.*|TestReplay.*|TestDLQLetterTooLargeAndTombstone)$' ./dlq ./pipeline
step "end-to-end suite on Apache Kafka, SASL_SSL / SCRAM-SHA-512"
KAFKA_TEST_SECURITY=sasl_ssl go test -count=1 -timeout 20m -run '^(TestEndToEnd|TestGracefulShutdownNoRedelivery|TestRealKafkaLifecycleMixed)$' ./cmd/ingestor

step "fuzzing the decoder"
# A count, not a duration: with -fuzztime=20s the Go 1.26 fuzz coordinator can report its own
# deadline as "context deadline exceeded" and fail without any failing input (it did once on a
# loaded machine, at 15:50 UTC on 2026-12-02). A count has no deadline to race. 200,000 inputs
# took about 20 s here; a real finding still fails the run and writes testdata/fuzz/FuzzDecode.
go test -run='^$' -fuzz='^FuzzDecode$' -fuzztime=200000x ./schemas

echo
echo "all tests passed in $(( $(date +%s) - started )) s"
