//go:build unix

package schemas

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) used by the process so far. Benchmarks
// report records per CPU-second as well as per wall-second, because on a shared machine
// wall-clock rates mostly measure the neighbours.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
