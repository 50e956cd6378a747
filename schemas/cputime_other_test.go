//go:build !unix

package schemas

import "time"

func processCPU() time.Duration { return 0 }
