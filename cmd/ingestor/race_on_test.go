//go:build race

package main

// raceEnabled: the race detector multiplies memory use 5–10×, so memory bounds are logged,
// not asserted, in a -race run (scripts/test.sh runs the suite both ways).
const raceEnabled = true
