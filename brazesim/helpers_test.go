package brazesim

import (
	"context"
	"os"
)

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
