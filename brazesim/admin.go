package brazesim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// serveAdmin serves the unauthenticated inspection API under /_sim/.
//
//	GET  /_sim/users                       all users (JSON array)
//	GET  /_sim/users/{external_id}         one user by external_id (404 if none)
//	GET  /_sim/user?kind=email&id=a@b.c    one user by any identifier kind
//	GET  /_sim/ops?kind=external_id&id=u1  operation log of a user (Sim.Ops; kind as for /_sim/user)
//	GET  /_sim/stats                       Stats
//	GET  /_sim/faults                      current Faults
//	POST /_sim/faults                      replace Faults (JSON body)
//	POST /_sim/reset                       Reset
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/_sim")
	switch {
	case p == "/stats" && r.Method == http.MethodGet:
		adminJSON(w, http.StatusOK, s.Stats())
	case p == "/users" && r.Method == http.MethodGet:
		adminJSON(w, http.StatusOK, s.Users())
	case strings.HasPrefix(p, "/users/") && r.Method == http.MethodGet:
		raw := strings.TrimPrefix(r.URL.EscapedPath(), "/_sim/users/")
		id, err := url.PathUnescape(raw)
		if err != nil {
			id = raw
		}
		s.adminUser(w, "external_id", id)
	case p == "/user" && r.Method == http.MethodGet:
		q := r.URL.Query()
		s.adminUser(w, q.Get("kind"), q.Get("id"))
	case p == "/ops" && r.Method == http.MethodGet:
		q := r.URL.Query()
		if _, _, ok := opKey(q.Get("kind"), ""); !ok {
			adminJSON(w, http.StatusBadRequest, map[string]string{"message": "kind must be external_id, braze_id, email, phone or alias"})
			return
		}
		adminJSON(w, http.StatusOK, s.Ops(q.Get("kind"), q.Get("id")))
	case p == "/faults" && r.Method == http.MethodGet:
		adminJSON(w, http.StatusOK, s.Faults())
	case p == "/faults" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		var f Faults
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		err := json.Unmarshal(b, &f)
		if err == nil {
			err = f.Check()
		}
		if err != nil {
			adminJSON(w, http.StatusBadRequest, map[string]string{"message": "invalid faults: " + err.Error()})
			return
		}
		s.SetFaults(f)
		adminJSON(w, http.StatusOK, f)
	case p == "/reset" && r.Method == http.MethodPost:
		s.Reset()
		adminJSON(w, http.StatusOK, map[string]string{"message": "reset"})
	default:
		adminJSON(w, http.StatusNotFound, map[string]string{"message": "unknown admin endpoint"})
	}
}

func (s *Sim) adminUser(w http.ResponseWriter, kind, id string) {
	u, ok := s.User(kind, id)
	if !ok {
		adminJSON(w, http.StatusNotFound, map[string]string{"message": "no such user"})
		return
	}
	adminJSON(w, http.StatusOK, u)
}

func adminJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
