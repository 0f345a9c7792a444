package modproxy

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/note"
)

// checksumDB is a local checksum database that knows the genuine go.sum lines of mods.
type checksumDB struct {
	*httptest.Server
	vkey string // the GOSUMDB value a client verifies with

	mu    sync.Mutex
	paths []string
}

func newChecksumDB(t *testing.T, mods ...modFiles) *checksumDB {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, "sumdb.test")
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string][]byte{}
	for _, m := range mods {
		sums[m.path+"@"+m.version] = m.goSum(t)
	}
	db := &checksumDB{vkey: vkey}
	h := sumdb.NewServer(sumdb.NewTestServer(skey, func(path, vers string) ([]byte, error) {
		if s, ok := sums[path+"@"+vers]; ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s@%s: not found", path, vers)
	}))
	db.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db.mu.Lock()
		db.paths = append(db.paths, r.URL.Path)
		db.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(db.Close)
	return db
}

func (db *checksumDB) requests() int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return len(db.paths)
}

// TestVerification: the proxy refuses upstream files the checksum database does not
// vouch for, unless GONOSUMDB exempts the module; nothing refused is cached.
func TestVerification(t *testing.T) {
	good := makeModule(t, "good.test/m", "v1.0.0", "good")
	// The database records the genuine zip and go.mod; upstream serves tampered ones.
	genuineZip := makeModule(t, "bad.test/zip", "v1.0.0", "genuine")
	tamperedZip := makeModule(t, "bad.test/zip", "v1.0.0", "tampered")
	genuineMod := makeModule(t, "bad.test/mod", "v1.0.0", "same")
	tamperedMod := genuineMod
	tamperedMod.mod = append([]byte(nil), genuineMod.mod...)
	tamperedMod.mod = append(tamperedMod.mod, "\nrequire evil.test/x v1.0.0\n"...)
	db := newChecksumDB(t, good, genuineZip, genuineMod)
	up := newUpstream(t, good, tamperedZip, tamperedMod)

	tests := []struct {
		name      string
		noSumDB   string
		mod       modFiles
		want      int
		wantInErr string
	}{
		{"genuine module", "", good, http.StatusOK, ""},
		{"tampered zip", "", tamperedZip, http.StatusNotFound, "untrusted revision"},
		{"tampered go.mod", "", tamperedMod, http.StatusNotFound, "untrusted revision"},
		{"tampered zip under GONOSUMDB", "bad.test", tamperedZip, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serve(t, WithUpstream(up.URL), WithGoSumDB(db.vkey+" "+db.URL), WithGoNoSumDB(tt.noSumDB))
			user, pass := s.Credentials("default", "v1")
			for _, ext := range []string{".zip", ".mod", ".info"} {
				code, _, body := s.get(t, "/default/"+tt.mod.path+"/@v/"+tt.mod.version+ext, user, pass)
				if code != tt.want || !strings.Contains(body, tt.wantInErr) {
					t.Fatalf("%s: status %d %q, want %d with %q", ext, code, body, tt.want, tt.wantInErr)
				}
				if ext == ".zip" && code == http.StatusOK && body != string(tt.mod.zip) {
					t.Errorf("zip served differs from upstream's")
				}
			}
			_, entries, err := s.DiskUsage()
			if err != nil {
				t.Fatal(err)
			}
			if wantEntries := map[bool]int{true: 3, false: 0}[tt.want == http.StatusOK]; entries != wantEntries {
				t.Errorf("cache holds %d entries, want %d", entries, wantEntries)
			}
		})
	}
}

// TestSumDBProxy: a go command that verifies against the checksum database needs only the
// proxy: it reaches the database through /<scope>/sumdb/, and a second build with an
// empty module cache gets the lookups and tiles from the proxy's cache.
func TestSumDBProxy(t *testing.T) {
	good := makeModule(t, "good.test/m", "v1.0.0", "good")
	db := newChecksumDB(t, good)
	up := newUpstream(t, good)
	s := serve(t, WithUpstream(up.URL), WithGoSumDB(db.vkey+" "+db.URL))
	dir := mainModule(t, good)

	var dbBefore int
	for i, build := range []string{"s1", "s2"} {
		netrc, err := s.Netrc(s.host(), "default", build)
		if err != nil {
			t.Fatal(err)
		}
		// GOSUMDB without a URL: the go command would dial https://sumdb.test itself (and
		// fail) unless the proxy says it proxies that database.
		env := s.goEnv(t, "default", netrc, "GOSUMDB="+db.vkey, "GONOSUMDB=", "GOPRIVATE=")
		got, out, err := goModDownload(t, dir, env)
		if err != nil || len(got) != 1 || got[0].Error != "" {
			t.Fatalf("%s: go mod download: %v %+v\n%s", build, err, got, out)
		}
		st := s.BuildStats(build)
		t.Logf("%s: stats %+v, checksum database requests %d", build, st, db.requests())
		if i == 0 {
			// Misses: the module download and at least the checksum database lookup.
			if db.requests() == 0 || st.Misses < 2 {
				t.Fatalf("cold build did not reach the checksum database through the proxy")
			}
			dbBefore = db.requests()
			continue
		}
		if db.requests() != dbBefore || st.Misses != 0 {
			t.Errorf("warm build: checksum database requests %d -> %d, misses %d; want none", dbBefore, db.requests(), st.Misses)
		}
	}
}
