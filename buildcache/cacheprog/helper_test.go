package cacheprog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/buildsvc/buildsvc/buildcache"
)

func id(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// getLine and putLine are requests as the go command writes them (its
// encoder's line, then one more newline; a put's body on the next line).
func getLine(n int, action string) string {
	return fmt.Sprintf(`{"ID":%d,"Command":"get","ActionID":%q}`+"\n\n", n, b64(id(action)))
}

func putLine(n int, action string, body string) string {
	return putLineID(n, action, id(body), body)
}

func putLineID(n int, action string, outputID []byte, body string) string {
	s := fmt.Sprintf(`{"ID":%d,"Command":"put","ActionID":%q,"OutputID":%q,"BodySize":%d}`+"\n\n", n, b64(id(action)), b64(outputID), len(body))
	if len(body) > 0 {
		s += `"` + b64([]byte(body)) + `"` + "\n"
	}
	return s
}

func closeLine(n int) string { return fmt.Sprintf(`{"ID":%d,"Command":"close"}`+"\n\n", n) }

// fakeRemote is a Remote in memory.
type fakeRemote struct {
	mu      sync.Mutex
	actions map[string]buildcache.Entry
	outputs map[string][]byte
	err     error // every call fails with it
	calls   int
	puts    []string // action ids put, hex
}

func newFakeRemote() *fakeRemote {
	return &fakeRemote{actions: map[string]buildcache.Entry{}, outputs: map[string][]byte{}}
}

func (f *fakeRemote) add(action, body string) {
	f.actions[hex.EncodeToString(id(action))] = buildcache.Entry{OutputID: id(body), Size: int64(len(body)), Time: time.Unix(1700000000, 0)}
	f.outputs[hex.EncodeToString(id(body))] = []byte(body)
}

func (f *fakeRemote) GetAction(_ context.Context, actionID []byte) (buildcache.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return buildcache.Entry{}, f.err
	}
	e, ok := f.actions[hex.EncodeToString(actionID)]
	if !ok {
		return e, buildcache.ErrNotFound
	}
	return e, nil
}

func (f *fakeRemote) OpenOutput(_ context.Context, outputID []byte) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, 0, f.err
	}
	dt, ok := f.outputs[hex.EncodeToString(outputID)]
	if !ok {
		return nil, 0, buildcache.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(dt)), int64(len(dt)), nil
}

func (f *fakeRemote) Put(_ context.Context, actionID, outputID []byte, size int64, body io.Reader) error {
	dt, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return f.err
	}
	if int64(len(dt)) != size || !bytes.Equal(id(string(dt)), outputID) {
		return errors.New("fake remote: body does not match")
	}
	f.puts = append(f.puts, hex.EncodeToString(actionID))
	f.outputs[hex.EncodeToString(outputID)] = dt
	f.actions[hex.EncodeToString(actionID)] = buildcache.Entry{OutputID: outputID, Size: size, Time: time.Now()}
	return nil
}

// exchange runs Serve on input and returns the raw responses by ID, the
// helper's log and Serve's error.
func exchange(t *testing.T, h *Helper, input string) (map[int64]map[string]any, error) {
	t.Helper()
	var out bytes.Buffer
	err := h.Serve(context.Background(), strings.NewReader(input), &out)
	resps := map[int64]map[string]any{}
	dec := json.NewDecoder(&out)
	for {
		var m map[string]any
		if derr := dec.Decode(&m); derr == io.EOF {
			break
		} else if derr != nil {
			t.Fatalf("helper wrote bad JSON: %v\n%s", derr, out.String())
		}
		n := int64(m["ID"].(float64))
		if _, dup := resps[n]; dup {
			t.Fatalf("two responses to %d", n)
		}
		resps[n] = m
	}
	return resps, err
}

func keysOf(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	slices.Sort(k)
	return k
}

func bytesField(t *testing.T, m map[string]any, k string) []byte {
	t.Helper()
	s, _ := m[k].(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%s = %v: %v", k, m[k], err)
	}
	return b
}

// checkHit checks a get or put response names a file holding body.
func checkFile(t *testing.T, m map[string]any, body string) {
	t.Helper()
	p, _ := m["DiskPath"].(string)
	if !filepath.IsAbs(p) {
		t.Fatalf("DiskPath %q is not absolute (%v)", p, m)
	}
	dt, err := os.ReadFile(p)
	if err != nil || string(dt) != body {
		t.Errorf("DiskPath holds %q (%v), want %q", dt, err, body)
	}
}

func checkHit(t *testing.T, m map[string]any, body string) {
	t.Helper()
	if got := keysOf(m); !slices.Equal(got, []string{"DiskPath", "ID", "OutputID", "Size", "Time"}) && !(len(body) == 0 && slices.Equal(got, []string{"DiskPath", "ID", "OutputID", "Time"})) {
		t.Errorf("hit fields = %v", got)
	}
	if !bytes.Equal(bytesField(t, m, "OutputID"), id(body)) {
		t.Errorf("hit OutputID = %v", m["OutputID"])
	}
	if size, _ := m["Size"].(float64); int(size) != len(body) {
		t.Errorf("hit Size = %v, want %d", m["Size"], len(body))
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["Time"])); err != nil {
		t.Errorf("hit Time = %v: %v", m["Time"], err)
	}
	checkFile(t, m, body)
}

func checkMiss(t *testing.T, m map[string]any) {
	t.Helper()
	if got := keysOf(m); !slices.Equal(got, []string{"ID", "Miss"}) || m["Miss"] != true {
		t.Errorf("miss = %v", m)
	}
}

func checkErr(t *testing.T, m map[string]any) {
	t.Helper()
	if s, _ := m["Err"].(string); s == "" || m["DiskPath"] != nil || m["Miss"] != nil {
		t.Errorf("response = %v, want only an Err", m)
	}
}

func TestServe(t *testing.T) {
	const big = "a larger body, more than one buffer of the reader once encoded... "
	bigBody := strings.Repeat(big, 3000)
	for _, tc := range []struct {
		name   string
		remote func(*fakeRemote) // nil: no remote
		input  string
		check  func(t *testing.T, r map[int64]map[string]any)
		stats  Stats
		log    string // a substring of the log; "" for an empty log
		puts   []string
	}{{
		name:  "announces its commands first",
		input: "",
		check: func(t *testing.T, r map[int64]map[string]any) {
			if got := keysOf(r[0]); !slices.Equal(got, []string{"ID", "KnownCommands"}) {
				t.Errorf("first response fields = %v", got)
			}
			if got := fmt.Sprint(r[0]["KnownCommands"]); got != "[get put close]" {
				t.Errorf("KnownCommands = %s", got)
			}
		},
	}, {
		name:  "a local miss without a store",
		input: getLine(1, "a") + closeLine(2),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkMiss(t, r[1])
			if got := keysOf(r[2]); !slices.Equal(got, []string{"ID"}) {
				t.Errorf("close response = %v", r[2])
			}
		},
		stats: Stats{Misses: 1},
	}, {
		name:  "put then get",
		input: putLine(1, "a", "output of a") + getLine(2, "a") + closeLine(3),
		check: func(t *testing.T, r map[int64]map[string]any) {
			if got := keysOf(r[1]); !slices.Equal(got, []string{"DiskPath", "ID"}) {
				t.Errorf("put response fields = %v", got)
			}
			checkFile(t, r[1], "output of a")
			checkHit(t, r[2], "output of a")
		},
		stats: Stats{Puts: 1, LocalHits: 1},
	}, {
		name:  "an empty body has no body line",
		input: putLine(1, "a", "") + getLine(2, "a"),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkFile(t, r[1], "")
			checkHit(t, r[2], "")
		},
		stats: Stats{Puts: 1, LocalHits: 1},
	}, {
		name:  "a large body",
		input: putLine(1, "a", bigBody) + getLine(2, "a"),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkHit(t, r[2], bigBody)
		},
		stats: Stats{Puts: 1, LocalHits: 1},
	}, {
		name:  "a body that is not its output id is refused, the stream goes on",
		input: putLineID(1, "a", id("something else"), "output of a") + getLine(2, "a") + putLine(3, "b", "output of b"),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkErr(t, r[1])
			checkMiss(t, r[2])
			checkFile(t, r[3], "output of b")
		},
		stats: Stats{Misses: 1, Puts: 1},
	}, {
		name:  "malformed ids and unknown commands are errors",
		input: `{"ID":1,"Command":"get","ActionID":"AAAA"}` + "\n" + `{"ID":2,"Command":"get2","ActionID":"AAAA"}` + "\n" + getLine(3, "a"),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkErr(t, r[1])
			checkErr(t, r[2])
			checkMiss(t, r[3])
		},
		stats: Stats{Misses: 1},
	}, {
		name:  "nothing is read after close",
		input: closeLine(1) + "not JSON at all\n",
		check: func(t *testing.T, r map[int64]map[string]any) {
			if len(r) != 2 {
				t.Errorf("responses = %v", r)
			}
		},
	}, {
		name:   "a remote hit fills the local directory",
		remote: func(f *fakeRemote) { f.add("a", "remote output") },
		input:  getLine(1, "a") + getLine(2, "b") + closeLine(3),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkHit(t, r[1], "remote output")
			checkMiss(t, r[2])
			if p, _ := r[1]["DiskPath"].(string); !strings.Contains(p, LocalSubdir) {
				t.Errorf("remote hit served from %s, not the local directory", p)
			}
		},
		stats: Stats{RemoteHits: 1, Misses: 1},
	}, {
		name: "a remote output that is not what its id says is a miss",
		remote: func(f *fakeRemote) {
			f.add("a", "remote output")
			f.outputs[hex.EncodeToString(id("remote output"))] = []byte("rotten output")
		},
		input: getLine(1, "a") + closeLine(2),
		check: func(t *testing.T, r map[int64]map[string]any) { checkMiss(t, r[1]) },
		stats: Stats{Misses: 1},
	}, {
		name: "a failing store is said once, then left alone",
		remote: func(f *fakeRemote) {
			f.err = errors.New("dial unix /run/buildsvc/gocache.sock: connect: no such file or directory")
		},
		input: getLine(1, "a") + getLine(2, "b") + putLine(3, "c", "output of c") + getLine(4, "c") + closeLine(5),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkMiss(t, r[1])
			checkMiss(t, r[2])
			checkFile(t, r[3], "output of c")
			checkHit(t, r[4], "output of c")
		},
		stats: Stats{Misses: 2, Puts: 1, LocalHits: 1, RemoteFailed: true},
		log:   "buildsvc-gocacheprog: build cache store unreachable (dial unix /run/buildsvc/gocache.sock: connect: no such file or directory): building with the local cache only\n",
	}, {
		name:   "puts reach the store",
		remote: func(f *fakeRemote) { f.add("got", "remote output") },
		input:  getLine(1, "got") + putLine(2, "new", "new output") + closeLine(3),
		check: func(t *testing.T, r map[int64]map[string]any) {
			checkHit(t, r[1], "remote output")
			checkFile(t, r[2], "new output")
		},
		stats: Stats{RemoteHits: 1, Puts: 1, RemotePuts: 1},
		puts:  []string{hex.EncodeToString(id("new"))},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			var remote Remote
			var fake *fakeRemote
			if tc.remote != nil {
				fake = newFakeRemote()
				tc.remote(fake)
				remote = fake
			}
			h, err := New(t.TempDir(), remote, WithLog(&log))
			if err != nil {
				t.Fatal(err)
			}
			r, err := exchange(t, h, tc.input)
			if err != nil {
				t.Fatalf("serve: %v", err)
			}
			if r[0] == nil || r[0]["KnownCommands"] == nil {
				t.Fatalf("no announcement: %v", r)
			}
			tc.check(t, r)
			if got := h.Stats(); got != tc.stats {
				t.Errorf("stats = %+v, want %+v", got, tc.stats)
			}
			if tc.log == "" && log.Len() > 0 || !strings.Contains(log.String(), tc.log) || strings.Count(log.String(), "\n") > 1 {
				t.Errorf("log = %q, want %q", log.String(), tc.log)
			}
			if fake != nil && !slices.Equal(fake.puts, tc.puts) {
				t.Errorf("store got puts %v, want %v", fake.puts, tc.puts)
			}
		})
	}
}

// A broken stream ends Serve with an error; the go command then fails.
func TestServeBrokenStream(t *testing.T) {
	for name, input := range map[string]string{
		"not JSON":             "{not json}\n",
		"body not base64":      putLine(1, "a", "x")[:strings.Index(putLine(1, "a", "x"), "\"\n")+2] + "\"!!!!\"\n",
		"truncated body":       strings.TrimSuffix(putLine(1, "a", "a body"), "\"\n"),
		"no body":              putLine(1, "a", "a body")[:strings.Index(putLine(1, "a", "a body"), "\n\n")+2],
		"junk before the body": `{"ID":1,"Command":"put","ActionID":"` + b64(id("a")) + `","OutputID":"` + b64(id("x")) + `","BodySize":1}` + "\n1\"" + b64([]byte("x")) + "\"\n",
		"body not string":      putLine(1, "a", "")[:0] + `{"ID":1,"Command":"put","ActionID":"` + b64(id("a")) + `","OutputID":"` + b64(id("x")) + `","BodySize":1}` + "\n{}\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, err := New(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := exchange(t, h, input); err == nil {
				t.Errorf("serve of %q: no error", input)
			}
		})
	}
}

// Gets are answered concurrently, each with its own ID.
func TestServeConcurrentGets(t *testing.T) {
	h, err := New(t.TempDir(), nil, WithConcurrency(3))
	if err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for i := 1; i <= 50; i++ {
		in.WriteString(putLine(i, fmt.Sprint(i), fmt.Sprint("body ", i)))
	}
	for i := 51; i <= 150; i++ {
		in.WriteString(getLine(i, fmt.Sprint(i-50)))
	}
	r, err := exchange(t, h, in.String())
	if err != nil {
		t.Fatal(err)
	}
	for i := 51; i <= 150; i++ {
		if i <= 100 {
			checkHit(t, r[int64(i)], fmt.Sprint("body ", i-50))
		} else {
			checkMiss(t, r[int64(i)])
		}
	}
}

func TestTrim(t *testing.T) {
	h, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(t, h, putLine(1, "old", "old output")+putLine(2, "new", "new output")+putLine(3, "used", "used output")); err != nil {
		t.Fatal(err)
	}
	// The first close wrote trim.txt; a day later, files unused for five
	// days go: a hit is a use.
	then := time.Now().Add(-6 * 24 * time.Hour)
	for _, p := range []string{h.actionPath(id("old")), h.objectPath(id("old output")), h.actionPath(id("used")), h.objectPath(id("used output"))} {
		_ = os.Chtimes(p, then, then)
	}
	if r, err := exchange(t, h, getLine(1, "used")); err != nil {
		t.Fatal(err)
	} else {
		checkHit(t, r[1], "used output")
	}
	h.trim(time.Now())
	if _, err := os.Stat(h.objectPath(id("old output"))); err != nil {
		t.Errorf("trimmed before a day passed: %v", err)
	}
	h.trim(time.Now().Add(25 * time.Hour))
	if _, err := os.Stat(h.objectPath(id("old output"))); !os.IsNotExist(err) {
		t.Errorf("old output kept: %v", err)
	}
	for _, p := range []string{h.objectPath(id("new output")), h.objectPath(id("used output")), h.actionPath(id("used"))} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("recently used file trimmed: %v", err)
		}
	}
}

// A put whose file cannot be written is an Err answer, and its body is
// read all the same: the next request is read where it starts.
func TestServePutFailureKeepsStreamInStep(t *testing.T) {
	h, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	r, err := exchange(t, h, putLine(1, "a", "output of a")+getLine(2, "b"))
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	checkErr(t, r[1])
	checkMiss(t, r[2])
}

// slowRemote is a fakeRemote whose puts take a while, and which notes
// whether close was answered while one was under way.
type slowRemote struct {
	*fakeRemote
	closed chan struct{} // closed when the close response is written
}

func (s *slowRemote) Put(ctx context.Context, actionID, outputID []byte, size int64, body io.Reader) error {
	select {
	case <-s.closed:
	case <-time.After(200 * time.Millisecond):
	}
	return s.fakeRemote.Put(ctx, actionID, outputID, size, body)
}

// closeWatcher closes closed when the response to request n is written.
type closeWatcher struct {
	bytes.Buffer
	n       string
	closed  chan struct{}
	puts    func() int
	atClose int
}

func (w *closeWatcher) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`{"ID":`+w.n+`}`)) {
		w.atClose = w.puts()
		close(w.closed)
	}
	return w.Buffer.Write(p)
}

// Close is answered once every put has reached the store.
func TestCloseWaitsForUploads(t *testing.T) {
	fake := newFakeRemote()
	remote := &slowRemote{fakeRemote: fake, closed: make(chan struct{})}
	h, err := New(t.TempDir(), remote)
	if err != nil {
		t.Fatal(err)
	}
	w := &closeWatcher{n: "3", closed: remote.closed, puts: func() int {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return len(fake.puts)
	}}
	in := putLine(1, "a", "output of a") + putLine(2, "b", "output of b") + closeLine(3)
	if err := h.Serve(context.Background(), strings.NewReader(in), w); err != nil {
		t.Fatal(err)
	}
	if w.atClose != 2 {
		t.Errorf("close answered with %d of 2 puts in the store", w.atClose)
	}
}
