package pipeline

import (
	"bufio"
	"context"
	"net"

	"github.com/segmentio/kafka-go"
)

// fetchReadBuffer is the read buffer put under each Kafka connection. kafka-go reads through
// a 4 KiB bufio.Reader, so a fetch of ~500-byte records costs a read syscall every few
// records (the largest single cost in the CPU profile); a large buffer beneath it turns those
// into memory copies.
const fetchReadBuffer = 256 << 10

// BufferedDialer returns a copy of d (nil: plaintext defaults) whose connections read through
// a fetchReadBuffer-sized buffer. TLS, when configured, still wraps the buffered connection.
func BufferedDialer(d *kafka.Dialer) *kafka.Dialer {
	out := &kafka.Dialer{}
	if d != nil {
		*out = *d
	}
	base := out.DialFunc
	if base == nil {
		nd := &net.Dialer{LocalAddr: out.LocalAddr, FallbackDelay: out.FallbackDelay, KeepAlive: out.KeepAlive}
		base = nd.DialContext
	}
	out.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := base(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &bufConn{Conn: c, r: bufio.NewReaderSize(c, fetchReadBuffer)}, nil
	}
	return out
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
