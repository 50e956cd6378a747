package dedup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/braze-ingestor/braze-ingestor/dedup"
	"github.com/braze-ingestor/braze-ingestor/dedup/redistest"
)

func stores(t *testing.T, o dedup.Options) map[string]dedup.Store {
	t.Helper()
	r, err := dedup.NewRedis(context.Background(), redistest.Start(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return map[string]dedup.Store{"memory": dedup.NewMemory(o), "redis": r}
}

// The contract both stores keep: hashes come back as recorded, 0 forgets, Forget deletes
// what it read, ids are seen after Record.
func TestStoreContract(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t, dedup.Options{AttrTTL: time.Hour, IDWindow: time.Hour}) {
		t.Run(name, func(t *testing.T) {
			err := s.Record(ctx, &dedup.Update{
				Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a", "b"}, Hashes: []uint64{11, 12}}, {User: "u2", Keys: []string{"a"}, Hashes: []uint64{21}}},
				IDs:   []string{"id-1"},
			})
			if err != nil {
				t.Fatal(err)
			}
			q := dedup.Query{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a", "b", "c"}}, {User: "u2", Keys: []string{"a"}}, {User: "u3", Keys: []string{"a"}}},
				IDs: []string{"id-1", "id-2"}}
			if err := s.Lookup(ctx, &q); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(q.Users[0].Hashes, q.Users[1].Hashes, q.Users[2].Hashes, q.Seen); got != "[11 12 0] [21] [0] [true false]" {
				t.Fatalf("lookup %s", got)
			}
			// 0 forgets a key.
			if err := s.Record(ctx, &dedup.Update{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a"}, Hashes: []uint64{0}}}}); err != nil {
				t.Fatal(err)
			}
			q = dedup.Query{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a", "b"}}}, Forget: true}
			if err := s.Lookup(ctx, &q); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(q.Users[0].Hashes); got != "[0 12]" {
				t.Fatalf("after forget: %s", got)
			}
			// Forget deleted what it read.
			q = dedup.Query{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"b"}}}}
			if err := s.Lookup(ctx, &q); err != nil {
				t.Fatal(err)
			}
			if q.Users[0].Hashes[0] != 0 {
				t.Fatalf("Forget kept %d", q.Users[0].Hashes[0])
			}
			// ForgetUsers forgets every attribute of a deleted user, and only theirs.
			if err := s.Record(ctx, &dedup.Update{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a", "b"}, Hashes: []uint64{31, 32}}}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Record(ctx, &dedup.Update{ForgetUsers: []string{"u1"}}); err != nil {
				t.Fatal(err)
			}
			q = dedup.Query{Users: []dedup.UserAttrs{{User: "u1", Keys: []string{"a", "b"}}, {User: "u2", Keys: []string{"a"}}}}
			if err := s.Lookup(ctx, &q); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(q.Users[0].Hashes, q.Users[1].Hashes); got != "[0 0] [21]" {
				t.Fatalf("after ForgetUsers u1: %s", got)
			}
		})
	}
}

func TestStoreExpiry(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t, dedup.Options{AttrTTL: time.Second, IDWindow: time.Second}) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := s.Record(ctx, &dedup.Update{Users: []dedup.UserAttrs{{User: "u", Keys: []string{"a"}, Hashes: []uint64{1}}}, IDs: []string{"x"}}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2100 * time.Millisecond)
			q := dedup.Query{Users: []dedup.UserAttrs{{User: "u", Keys: []string{"a"}}}, IDs: []string{"x"}}
			if err := s.Lookup(ctx, &q); err != nil {
				t.Fatal(err)
			}
			if q.Users[0].Hashes[0] != 0 || q.Seen[0] {
				t.Fatalf("not expired: %v %v", q.Users[0].Hashes, q.Seen)
			}
		})
	}
}

func TestMemoryBounded(t *testing.T) {
	m := dedup.NewMemory(dedup.Options{AttrEntries: 100, IDEntries: 10})
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		_ = m.Record(ctx, &dedup.Update{Users: []dedup.UserAttrs{{User: fmt.Sprint("u", i), Keys: []string{"a"}, Hashes: []uint64{1}}}, IDs: []string{fmt.Sprint(i)}})
	}
	if a, ids := m.Len(); a != 100 || ids != 10 {
		t.Fatalf("entries %d/%d, want 100/10", a, ids)
	}
	// The most recent survive, the oldest are gone.
	q := dedup.Query{Users: []dedup.UserAttrs{{User: "u999", Keys: []string{"a"}}, {User: "u0", Keys: []string{"a"}}}, IDs: []string{"999", "0"}}
	_ = m.Lookup(ctx, &q)
	if q.Users[0].Hashes[0] != 1 || q.Users[1].Hashes[0] != 0 || !q.Seen[0] || q.Seen[1] {
		t.Fatalf("LRU order: %v %v %v", q.Users[0].Hashes, q.Users[1].Hashes, q.Seen)
	}
}

// An id's window starts at its first delivery (SET NX): recording it again does not extend it.
func TestIDWindowStartsAtFirstDelivery(t *testing.T) {
	ctx := context.Background()
	for name, s := range stores(t, dedup.Options{IDWindow: 2 * time.Second}) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_ = s.Record(ctx, &dedup.Update{IDs: []string{"x"}})
			time.Sleep(1200 * time.Millisecond)
			_ = s.Record(ctx, &dedup.Update{IDs: []string{"x"}})
			time.Sleep(1200 * time.Millisecond)
			q := dedup.Query{IDs: []string{"x"}}
			_ = s.Lookup(ctx, &q)
			if q.Seen[0] {
				t.Fatal("window extended by a second record")
			}
		})
	}
}

func TestUserKeyAndHash(t *testing.T) {
	if got := dedup.UserKey(0x0123456789abcdef); got != "0123456789abcdef" {
		t.Fatalf("UserKey = %q", got)
	}
	if dedup.UserKey(1) == dedup.UserKey(2) || len(dedup.UserKey(0)) != 16 {
		t.Fatal("user keys")
	}
	if dedup.ValueHash([]byte("1")) == dedup.ValueHash([]byte("2")) || dedup.ValueHash(nil) == 0 {
		t.Fatal("value hash")
	}
}
