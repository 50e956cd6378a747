package preflight

import "fmt"

// CheckAPIKey reports whether key can be sent as the Authorization header value. Braze REST
// keys are printable ASCII without spaces (a UUID); anything else, e.g. an interior newline from
// a badly copied Secret, would make every request fail before it leaves the process, which must
// not look like an outage. The error names the position and the kind of character, never the
// key. Callers trim surrounding whitespace first.
func CheckAPIKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty")
	}
	for i := 0; i < len(key); i++ {
		switch b := key[i]; {
		case b == ' ' || b == '\t':
			return fmt.Errorf("contains whitespace at byte %d of %d (keys have none; surrounding whitespace is trimmed); the key is not shown", i+1, len(key))
		case b < 0x20 || b == 0x7f:
			return fmt.Errorf("contains a control character (0x%02x) at byte %d of %d: it cannot be sent as an HTTP header; the key is not shown", b, i+1, len(key))
		case b > 0x7e:
			return fmt.Errorf("contains a non-ASCII byte at byte %d of %d (keys are printable ASCII); the key is not shown", i+1, len(key))
		}
	}
	return nil
}
