package bench

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// The counting endpoint is what the throughput phases send the worker to. It does what the
// Benthos peers' /events endpoint does (read the body, answer 201) plus what the bar needs
// to know of a Braze request: the number of objects, which must stay within Braze's per
// request limit. It deliberately skips validation and state (the simulator does those in
// the worker-validate phase), so that the endpoint's CPU, which shares the two cores with
// the worker, is about the same for every contender.

// maxTrackBody and maxTrackObjects are Braze's per-request limits (docs/braze-rules.md §1).
const (
	maxTrackBody    = 4 << 20
	maxTrackObjects = 75
)

var errCountSyntax = errors.New("malformed JSON")

// countTrack counts the objects in the top-level arrays of a /users/track body. It checks
// the body's structure (brackets and strings balanced), not every JSON rule.
func countTrack(body []byte) (int, error) {
	depth, objects := 0, 0
	seen := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if countClass[c] == 0 {
			continue
		}
		switch c {
		case '"':
			end, ok := stringEnd(body, i+1)
			if !ok {
				return 0, errCountSyntax
			}
			i = end
		case '{', '[':
			if c == '{' && depth == 2 {
				objects++
			}
			depth++
			seen = true
		default: // '}', ']'
			depth--
			if depth < 0 {
				return 0, errCountSyntax
			}
		}
	}
	if depth != 0 || !seen {
		return 0, errCountSyntax
	}
	return objects, nil
}

// stringEnd returns the index of the quote closing the string whose contents start at i.
// Short strings (keys) are walked byte by byte; past 16 bytes the rest is searched with
// bytes.IndexByte, which is vectorised: long values are most of a body's bytes.
func stringEnd(b []byte, i int) (int, bool) {
	for n := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i, true
		case '\\':
			i++
			continue
		}
		if n++; n == 16 {
			break
		}
	}
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, false
		}
		q := i + j
		// The quote is escaped when an odd number of backslashes precede it.
		bs := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q, true
		}
		i = q + 1
	}
	return 0, false
}

// countClass marks the bytes countTrack acts on outside strings. (Eight-bytes-at-a-time
// scanning was tried and was slower: quotes come every few bytes in these bodies.)
var countClass = [256]byte{'"': 1, '{': 1, '[': 1, '}': 1, ']': 1}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// serveCount answers one /users/track request of a counting phase.
func (s *sinkState) serveCount(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		http.Error(w, `{"message":"Invalid API Key"}`, http.StatusUnauthorized)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		http.Error(w, `{"message":"Unsupported Media Type"}`, http.StatusUnsupportedMediaType)
		return
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	defer bodyPool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, maxTrackBody+1)); err != nil {
		http.Error(w, `{"message":"read error"}`, http.StatusBadRequest)
		return
	}
	if buf.Len() > maxTrackBody {
		http.Error(w, `{"message":"Request Entity Too Large"}`, http.StatusRequestEntityTooLarge)
		return
	}
	n, err := countTrack(buf.Bytes())
	switch {
	case err != nil:
		http.Error(w, `{"message":"Invalid JSON"}`, http.StatusBadRequest)
		return
	case n == 0:
		http.Error(w, `{"message":"Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."}`, http.StatusBadRequest)
		return
	case n > maxTrackObjects:
		s.overLimit.Add(1)
		http.Error(w, `{"message":"Max Input Length Exceeded"}`, http.StatusBadRequest)
		return
	}
	s.objects.Add(int64(n))
	for {
		cur := s.maxObjects.Load()
		if int64(n) <= cur || s.maxObjects.CompareAndSwap(cur, int64(n)) {
			break
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(created)
}
