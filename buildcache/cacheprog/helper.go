package cacheprog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/buildsvc/buildsvc/buildcache"
)

// Remote is the second level of the cache: buildcache.Client.
type Remote interface {
	GetAction(ctx context.Context, actionID []byte) (buildcache.Entry, error)
	OpenOutput(ctx context.Context, outputID []byte) (io.ReadCloser, int64, error)
	Put(ctx context.Context, actionID, outputID []byte, size int64, body io.Reader) error
}

var _ Remote = (*buildcache.Client)(nil)

// Option configures New.
type Option func(*options)

type options struct {
	log         io.Writer
	concurrency int
	seed        string
	fixedTime   time.Time
}

// WithLog is where the helper writes its one warning; default io.Discard.
func WithLog(w io.Writer) Option { return func(o *options) { o.log = w } }

// WithSeed adds a read-only level between the local directory and the
// store: dir, a helper's directory (SeedEnv) made by an earlier run, e.g.
// the standard library compiled into the builder image by `buildsvc
// bootstrap`. Its entries are answered in place, never copied or
// changed; a dir that does not exist is no level.
func WithSeed(dir string) Option { return func(o *options) { o.seed = dir } }

// WithFixedTime stamps every entry the helper stores with t instead of
// the clock and never trims: a run that makes a seed makes the same files
// from the same inputs (SourceDateEpochEnv).
func WithFixedTime(t time.Time) Option { return func(o *options) { o.fixedTime = t } }

// WithConcurrency bounds the gets served and the puts sent to the remote
// store at once; default 8.
func WithConcurrency(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.concurrency = n
		}
	}
}

// Stats counts what a Helper did.
type Stats struct {
	// LocalHits, SeedHits and RemoteHits are gets found at each level;
	// Misses gets found at none.
	LocalHits, SeedHits, RemoteHits, Misses int64
	// Puts are puts stored locally; RemotePuts those the store took.
	Puts, RemotePuts int64
	// RemoteFailed says the store failed once and was not asked again.
	RemoteFailed bool
	// Prefetched are entries fetched ahead from the store's hints.
	Prefetched int64
}

// Helper is the cache the go command talks to through Serve.
type Helper struct {
	dir    string
	seed   string // the seed's files, or ""
	remote Remote
	opts   options

	failed  atomic.Bool
	uploads sync.WaitGroup
	sem     chan struct{}

	localHits, seedHits, remoteHits, misses, puts, remotePuts, prefetched atomic.Int64

	used       usedIDs
	inflightMu sync.Mutex
	inflight   map[string]chan struct{} // action ids being fetched
}

// New returns a helper keeping its files in LocalSubdir of dir, and
// asking remote on a local miss; a nil remote is a local cache only.
func New(dir string, remote Remote, opts ...Option) (*Helper, error) {
	o := options{log: io.Discard, concurrency: 8}
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, errors.New("no cache directory")
	}
	abs, err := filepath.Abs(filepath.Join(dir, LocalSubdir))
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	for _, d := range []string{"a", "o", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
	}
	h := &Helper{dir: abs, remote: remote, opts: o, sem: make(chan struct{}, o.concurrency)}
	if o.seed != "" {
		seed, err := filepath.Abs(filepath.Join(o.seed, LocalSubdir))
		if err != nil {
			return nil, fmt.Errorf("seed directory: %w", err)
		}
		if fi, err := os.Stat(seed); err == nil && fi.IsDir() && seed != abs {
			h.seed = seed
		}
	}
	return h, nil
}

// now is the time entries are stamped with.
func (h *Helper) now() time.Time {
	if !h.opts.fixedTime.IsZero() {
		return h.opts.fixedTime
	}
	return time.Now()
}

// Stats reads the counters.
func (h *Helper) Stats() Stats {
	return Stats{
		LocalHits: h.localHits.Load(), SeedHits: h.seedHits.Load(), RemoteHits: h.remoteHits.Load(), Misses: h.misses.Load(),
		Puts: h.puts.Load(), RemotePuts: h.remotePuts.Load(), RemoteFailed: h.failed.Load(),
		Prefetched: h.prefetched.Load(),
	}
}

// knownCommands are announced in the first response.
var knownCommands = []Cmd{CmdGet, CmdPut, CmdClose}

// Serve speaks the protocol: it announces the known commands on w, then
// answers each request read from r until a close (answered once every get
// is answered and every put has reached the remote store) or the end of
// r. Gets are answered concurrently; a put's body is read before the next
// request. A request that fails gets an Err answer; only a broken stream
// (malformed JSON, a short body, a write error) ends Serve with an error.
func (h *Helper) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	var wmu sync.Mutex
	var werr error
	send := func(resp *Response) {
		wmu.Lock()
		defer wmu.Unlock()
		if werr != nil {
			return
		}
		if werr = enc.Encode(resp); werr == nil {
			werr = bw.Flush()
		}
	}
	writeErr := func() error {
		wmu.Lock()
		defer wmu.Unlock()
		if werr != nil {
			return fmt.Errorf("write response: %w", werr)
		}
		return nil
	}

	// With a store that keeps hints, the entries the last build of the
	// program used are fetched ahead while the go command starts; the ones
	// this run used are sent when it ends.
	pctx, stopPrefetch := context.WithCancel(ctx)
	defer stopPrefetch()
	var prefetching sync.WaitGroup
	hr, hints := h.remote.(Hinter)
	if hints && h.useRemote() {
		prefetching.Add(1)
		go func() {
			defer prefetching.Done()
			h.prefetch(pctx, hr)
		}()
	}
	var gets sync.WaitGroup
	finish := func() {
		stopPrefetch()
		prefetching.Wait()
		gets.Wait()
		h.uploads.Wait()
		if hints {
			h.sendHints(ctx, hr)
		}
		if h.opts.fixedTime.IsZero() {
			h.trim(time.Now())
		}
	}
	send(&Response{ID: 0, KnownCommands: knownCommands})
	for {
		if err := writeErr(); err != nil {
			finish()
			return err
		}
		line, err := readLine(br)
		if errors.Is(err, io.EOF) {
			finish()
			return nil
		}
		if err != nil {
			finish()
			return fmt.Errorf("read request: %w", err)
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			finish()
			return fmt.Errorf("request %q: %w", line, err)
		}
		switch req.Command {
		case CmdGet:
			gets.Add(1)
			h.sem <- struct{}{}
			go func() {
				defer gets.Done()
				defer func() { <-h.sem }()
				send(h.get(ctx, &req))
			}()
		case CmdPut:
			resp, err := h.put(ctx, &req, br)
			if err != nil {
				finish()
				return err
			}
			send(resp)
		case CmdClose:
			finish()
			send(&Response{ID: req.ID})
			return writeErr()
		default:
			if req.BodySize > 0 {
				if _, err := readBody(br, io.Discard); err != nil {
					finish()
					return err
				}
			}
			send(&Response{ID: req.ID, Err: fmt.Sprintf("unknown command %q", req.Command)})
		}
	}
}

// readLine returns the next non-blank line.
func readLine(br *bufio.Reader) ([]byte, error) {
	for {
		line, err := br.ReadBytes('\n')
		if t := bytes.TrimSpace(line); len(t) > 0 {
			return t, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// readBody copies a put's body, a JSON string of base64, to w and returns
// the decoded size.
func readBody(br *bufio.Reader, w io.Writer) (int64, error) {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("read body: %w", unexpected(err))
		}
		if c == '"' {
			break
		}
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return 0, fmt.Errorf("read body: %q where a JSON string should start", c)
		}
	}
	// quoted ends with the closing quote or fails: a body is whole.
	n, err := io.Copy(w, base64.NewDecoder(base64.StdEncoding, &quoted{br: br}))
	if err != nil {
		return n, fmt.Errorf("read body: %w", err)
	}
	return n, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// quoted reads from br up to a closing double quote, which it consumes.
type quoted struct {
	br   *bufio.Reader
	done bool
}

func (q *quoted) Read(p []byte) (int, error) {
	if q.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if q.br.Buffered() == 0 {
		if _, err := q.br.Peek(1); err != nil {
			return 0, unexpected(err)
		}
	}
	buf, _ := q.br.Peek(min(len(p), q.br.Buffered()))
	if i := bytes.IndexByte(buf, '"'); i >= 0 {
		n := copy(p, buf[:i])
		_, _ = q.br.Discard(i + 1)
		q.done = true
		return n, nil
	}
	n := copy(p, buf)
	_, _ = q.br.Discard(n)
	return n, nil
}

func (h *Helper) actionPath(id []byte) string { return idPath(h.dir, "a", id) }
func (h *Helper) objectPath(id []byte) string { return idPath(h.dir, "o", id) }

// idPath is the file of id in a helper's directory dir.
func idPath(dir, kind string, id []byte) string {
	x := hex.EncodeToString(id)
	return filepath.Join(dir, kind, x[:2], x)
}

// validID tells whether id is a Go cache id.
func validID(id []byte) bool { return len(id) == buildcache.IDSize }

// get answers a get: the local directory, then the store.
func (h *Helper) get(ctx context.Context, req *Request) *Response {
	if !validID(req.ActionID) {
		return &Response{ID: req.ID, Err: fmt.Sprintf("action id %x is not %d bytes", req.ActionID, buildcache.IDSize)}
	}
	if e, p, ok := h.lookup(h.dir, req.ActionID); ok {
		h.localHits.Add(1)
		h.used.add(req.ActionID)
		return hit(req.ID, e, p)
	}
	if e, p, ok := h.fromSeed(req.ActionID); ok {
		h.seedHits.Add(1)
		h.used.add(req.ActionID)
		return hit(req.ID, e, p)
	}
	if e, p, ok := h.fetchOnce(ctx, req.ActionID); ok {
		h.remoteHits.Add(1)
		h.used.add(req.ActionID)
		return hit(req.ID, e, p)
	}
	h.misses.Add(1)
	return &Response{ID: req.ID, Miss: true}
}

func hit(id int64, e buildcache.Entry, p string) *Response {
	t := e.Time
	return &Response{ID: id, OutputID: e.OutputID, Size: e.Size, Time: &t, DiskPath: p}
}

// record is a local action file: "v1 <output id> <size> <unix nanos>".
func record(e buildcache.Entry) []byte {
	return fmt.Appendf(nil, "v1 %x %d %d\n", e.OutputID, e.Size, e.Time.UnixNano())
}

func parseRecord(dt []byte) (buildcache.Entry, bool) {
	f := strings.Fields(string(dt))
	if len(f) != 4 || f[0] != "v1" {
		return buildcache.Entry{}, false
	}
	out, err1 := hex.DecodeString(f[1])
	size, err2 := strconv.ParseInt(f[2], 10, 64)
	nanos, err3 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || !validID(out) || size < 0 {
		return buildcache.Entry{}, false
	}
	return buildcache.Entry{OutputID: out, Size: size, Time: time.Unix(0, nanos)}, true
}

// local looks actionID up in the local directory, then in the seed: the
// levels on this machine.
func (h *Helper) local(actionID []byte) (buildcache.Entry, string, bool) {
	if e, p, ok := h.lookup(h.dir, actionID); ok {
		return e, p, true
	}
	return h.fromSeed(actionID)
}

// fromSeed looks actionID up in the seed, if there is one.
func (h *Helper) fromSeed(actionID []byte) (buildcache.Entry, string, bool) {
	if h.seed == "" {
		return buildcache.Entry{}, "", false
	}
	return h.lookup(h.seed, actionID)
}

// lookup looks actionID up in the helper's directory dir (the local one
// or the seed); a hit in the local one is marked used.
func (h *Helper) lookup(dir string, actionID []byte) (buildcache.Entry, string, bool) {
	ap := idPath(dir, "a", actionID)
	dt, err := os.ReadFile(ap)
	if err != nil {
		return buildcache.Entry{}, "", false
	}
	e, ok := parseRecord(dt)
	if !ok {
		return buildcache.Entry{}, "", false
	}
	op := idPath(dir, "o", e.OutputID)
	local := dir == h.dir
	if !present(op, e.Size, local) {
		return buildcache.Entry{}, "", false
	}
	if local {
		markUsed(ap)
	}
	return e, op, true
}

// present tells whether the object file p exists with size bytes, and if
// mark, marks it used.
func present(p string, size int64, mark bool) bool {
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false
	}
	if mark && time.Since(fi.ModTime()) > usedInterval {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
	return true
}

// usedInterval is how stale a file's time may be before a hit renews it
// (as Go's own cache does, to spare writes).
const usedInterval = time.Hour

func markUsed(p string) {
	if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > usedInterval {
		now := time.Now()
		_ = os.Chtimes(p, now, now)
	}
}

// remoteFailed turns the store off for the rest of the run, saying so
// once.
func (h *Helper) remoteFailed(err error) {
	if h.failed.CompareAndSwap(false, true) {
		fmt.Fprintf(h.opts.log, "buildsvc-gocacheprog: build cache store unreachable (%v): building with the local cache only\n", err)
	}
}

func (h *Helper) useRemote() bool { return h.remote != nil && !h.failed.Load() }

// fetch asks the store for actionID and fills the local directory with
// what it has. A miss, an output gone meanwhile or one whose bytes do not
// match their id are misses; other failures turn the store off.
func (h *Helper) fetch(ctx context.Context, actionID []byte) (buildcache.Entry, string, bool) {
	if !h.useRemote() {
		return buildcache.Entry{}, "", false
	}
	e, err := h.remote.GetAction(ctx, actionID)
	if err != nil {
		if !errors.Is(err, buildcache.ErrNotFound) {
			h.remoteFailed(err)
		}
		return buildcache.Entry{}, "", false
	}
	if !validID(e.OutputID) || e.Size < 0 {
		return buildcache.Entry{}, "", false
	}
	op := h.objectPath(e.OutputID)
	if !present(op, e.Size, true) {
		body, size, err := h.remote.OpenOutput(ctx, e.OutputID)
		if err != nil {
			if !errors.Is(err, buildcache.ErrNotFound) {
				h.remoteFailed(err)
			}
			return buildcache.Entry{}, "", false
		}
		err = h.writeObject(e.OutputID, size, func(w io.Writer) (int64, error) { return io.Copy(w, body) })
		body.Close()
		if err != nil || size != e.Size {
			return buildcache.Entry{}, "", false
		}
	}
	if err := h.writeFile(h.actionPath(actionID), func(w io.Writer) error { _, err := w.Write(record(e)); return err }); err != nil {
		return buildcache.Entry{}, "", false
	}
	return e, op, true
}

// errMismatch is a body that is not what its id says.
var errMismatch = errors.New("body does not match its output id")

// writeObject writes outputID's object from copyBody, which must give size
// bytes hashing to outputID, else nothing is stored.
func (h *Helper) writeObject(outputID []byte, size int64, copyBody func(io.Writer) (int64, error)) error {
	return h.writeFile(h.objectPath(outputID), func(w io.Writer) error {
		sum := sha256.New()
		n, err := copyBody(io.MultiWriter(w, sum))
		switch {
		case err != nil:
			return err
		case n != size:
			return fmt.Errorf("%w: %d bytes, want %d", errMismatch, n, size)
		case !bytes.Equal(sum.Sum(nil), outputID):
			return fmt.Errorf("%w: the body hashes to %x, not %x", errMismatch, sum.Sum(nil), outputID)
		}
		return nil
	})
}

// writeFile writes p with buildcache.WriteFile: builds that share the
// directory see whole files only; the build user and go read them.
func (h *Helper) writeFile(p string, write func(io.Writer) error) error {
	return buildcache.WriteFile(filepath.Join(h.dir, "tmp"), p, 0o755, 0o644, write)
}

// put stores a put's body locally, answers with its file and sends it to
// the store in the background. The error is a broken stream only; a put
// that fails otherwise is an Err answer.
func (h *Helper) put(ctx context.Context, req *Request, br *bufio.Reader) (*Response, error) {
	fail := func(format string, a ...any) *Response {
		return &Response{ID: req.ID, Err: fmt.Sprintf(format, a...)}
	}
	// The body is read whatever happens to the file it goes to, so that
	// the stream stays in step: readErr alone breaks it.
	var readErr error
	consumed := req.BodySize == 0
	copyBody := func(w io.Writer) (int64, error) {
		if consumed {
			return 0, nil
		}
		consumed = true
		sw := &stickyWriter{w: w}
		n, err := readBody(br, sw)
		if err != nil {
			readErr = err
			return n, err
		}
		return n, sw.err
	}
	if !validID(req.ActionID) || !validID(req.OutputID) || req.BodySize < 0 {
		if _, err := copyBody(io.Discard); readErr != nil {
			return nil, err
		}
		return fail("put: action id %x or output id %x is not %d bytes, or size %d is negative", req.ActionID, req.OutputID, buildcache.IDSize, req.BodySize), nil
	}
	if err := h.writeObject(req.OutputID, req.BodySize, copyBody); err != nil {
		if !consumed {
			_, _ = copyBody(io.Discard)
		}
		if readErr != nil {
			return nil, readErr
		}
		return fail("put %x: %v", req.ActionID, err), nil
	}
	e := buildcache.Entry{OutputID: req.OutputID, Size: req.BodySize, Time: h.now()}
	if err := h.writeFile(h.actionPath(req.ActionID), func(w io.Writer) error { _, err := w.Write(record(e)); return err }); err != nil {
		return fail("put %x: %v", req.ActionID, err), nil
	}
	h.puts.Add(1)
	h.used.add(req.ActionID)
	op := h.objectPath(req.OutputID)
	h.upload(ctx, req.ActionID, e, op)
	return &Response{ID: req.ID, DiskPath: op}, nil
}

// stickyWriter writes to w until w fails, then takes and drops the rest;
// err is the failure.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(p)
	}
	return len(p), nil
}

// upload sends a stored put to the store in the background; Serve waits
// for it before answering close.
func (h *Helper) upload(ctx context.Context, actionID []byte, e buildcache.Entry, op string) {
	if !h.useRemote() {
		return
	}
	h.uploads.Add(1)
	go func() {
		defer h.uploads.Done()
		h.sem <- struct{}{}
		defer func() { <-h.sem }()
		if !h.useRemote() {
			return
		}
		f, err := os.Open(op)
		if err != nil {
			return
		}
		defer f.Close()
		if err := h.remote.Put(ctx, actionID, e.OutputID, e.Size, f); err != nil {
			h.remoteFailed(err)
			return
		}
		h.remotePuts.Add(1)
	}()
}

// Local trimming, as Go's own cache does it: at most once a day, files
// unused for trimAge go.
const (
	trimInterval = 24 * time.Hour
	trimAge      = 5 * 24 * time.Hour
	trimFile     = "trim.txt"
)

// trim removes the local files not used for trimAge, once a trimInterval.
func (h *Helper) trim(now time.Time) {
	mark := filepath.Join(h.dir, trimFile)
	if dt, err := os.ReadFile(mark); err == nil {
		if last, err := strconv.ParseInt(strings.TrimSpace(string(dt)), 10, 64); err == nil && now.Sub(time.Unix(last, 0)) < trimInterval {
			return
		}
	}
	for _, kind := range []string{"a", "o", "tmp"} {
		_ = filepath.WalkDir(filepath.Join(h.dir, kind), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil && now.Sub(fi.ModTime()) > trimAge {
				_ = os.Remove(p)
			}
			return nil
		})
	}
	_ = h.writeFile(mark, func(w io.Writer) error { _, err := fmt.Fprintln(w, now.Unix()); return err })
}

// Main is the helper's program: it reads DirEnv, SeedEnv, SocketEnv and
// SourceDateEpochEnv through
// getenv, serves the go command on stdin and stdout, and returns the exit
// code. Only a local directory it cannot use or a broken protocol stream
// fail it; the store never does.
func Main(ctx context.Context, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	dir := getenv(DirEnv)
	if dir == "" {
		dir = getenv("GOCACHE")
	}
	if dir == "" || dir == "off" {
		d, err := os.UserCacheDir()
		if err != nil {
			fmt.Fprintf(stderr, "buildsvc-gocacheprog: no cache directory: set %s: %v\n", DirEnv, err)
			return 1
		}
		dir = filepath.Join(d, "go-build")
	}
	var remote Remote
	if sock := getenv(SocketEnv); sock != "" {
		c := buildcache.NewClient(sock)
		defer c.Close()
		remote = c
	}
	opts := []Option{WithLog(stderr), WithSeed(getenv(SeedEnv))}
	if v := getenv(SourceDateEpochEnv); v != "" {
		sec, err := strconv.ParseInt(v, 10, 64)
		if err != nil || sec < 0 {
			fmt.Fprintf(stderr, "buildsvc-gocacheprog: %s=%q is not a number of seconds\n", SourceDateEpochEnv, v)
			return 1
		}
		opts = append(opts, WithFixedTime(time.Unix(sec, 0).UTC()))
	}
	h, err := New(dir, remote, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "buildsvc-gocacheprog: %v\n", err)
		return 1
	}
	if err := h.Serve(ctx, stdin, stdout); err != nil {
		fmt.Fprintf(stderr, "buildsvc-gocacheprog: %v\n", err)
		return 1
	}
	return 0
}
