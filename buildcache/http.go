package buildcache

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The wire protocol, HTTP/1.1 over a unix socket. Ids are lowercase hex.
//
//	GET /v1/actions/{action}   200 with an ActionJSON, or 404
//	PUT /v1/actions/{action}   the output's bytes as the body, its id in
//	                           OutputIDHeader, Content-Length its size;
//	                           204, or 400 for a body that is not what its
//	                           id says
//	GET /v1/outputs/{output}   200 with the bytes, or 404
//
// The scope is the Handler's, never the request's.
const (
	actionsPath = "/v1/actions/"
	outputsPath = "/v1/outputs/"
	// OutputIDHeader carries a put's output id.
	OutputIDHeader = "Buildsvc-Output-Id"
)

// DefaultMaxObjectSize is the largest output a Handler takes unless told
// otherwise (WithMaxObjectSize).
const DefaultMaxObjectSize = 1 << 30

// DefaultTimeout bounds each request of a Client unless told otherwise
// (WithTimeout).
const DefaultTimeout = 30 * time.Second

// ActionJSON is the body of a hit on GET /v1/actions/{action}.
type ActionJSON struct {
	OutputID string    `json:"outputID"`
	Size     int64     `json:"size"`
	Time     time.Time `json:"time"`
}

// Option configures NewClient or Handler; each option says which.
type Option func(*options)

type options struct {
	timeout       time.Duration
	maxObjectSize int64
	hintsKey      string
}

func newOptions(opts []Option) options {
	o := options{timeout: DefaultTimeout, maxObjectSize: DefaultMaxObjectSize}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithTimeout bounds each request of a Client, body included (0: no
// bound). Default DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithMaxObjectSize is the largest output a Handler takes. Default
// DefaultMaxObjectSize.
func WithMaxObjectSize(n int64) Option { return func(o *options) { o.maxObjectSize = n } }

// Stats counts what a Handler served. The fields are safe to read while it
// serves; Snapshot reads them all.
type Stats struct {
	// Hits and Misses count action lookups; Puts stored entries.
	Hits, Misses, Puts atomic.Int64
	// BytesRead are output bytes sent to the client, BytesWritten those
	// stored.
	BytesRead, BytesWritten atomic.Int64
	// Errors counts requests that failed other than by a miss: refused
	// puts, store failures, broken connections.
	Errors atomic.Int64
	// Nanos is the time spent serving requests, in nanoseconds.
	Nanos atomic.Int64
}

// StatsSnapshot is Stats at one moment.
type StatsSnapshot struct {
	Hits, Misses, Puts      int64
	BytesRead, BytesWritten int64
	Errors                  int64
	Duration                time.Duration
}

// Snapshot reads every counter.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{
		Hits: s.Hits.Load(), Misses: s.Misses.Load(), Puts: s.Puts.Load(),
		BytesRead: s.BytesRead.Load(), BytesWritten: s.BytesWritten.Load(),
		Errors: s.Errors.Load(), Duration: time.Duration(s.Nanos.Load()),
	}
}

// Handler serves scope of st with the wire protocol. stats, if not nil,
// counts what it serves. Options: WithMaxObjectSize, WithHints. The caller runs it on
// a listener of its own, e.g. a unix socket one build reaches, so that the
// build can only see its scope; the server's timeouts are the caller's.
func Handler(st Store, scope string, stats *Stats, opts ...Option) http.Handler {
	if stats == nil {
		stats = new(Stats)
	}
	h := &handler{st: st, scope: scope, stats: stats, opts: newOptions(opts)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+actionsPath+"{id}", h.getAction)
	mux.HandleFunc("PUT "+actionsPath+"{id}", h.putAction)
	mux.HandleFunc("GET "+outputsPath+"{id}", h.getOutput)
	mux.HandleFunc("GET "+hintsPath, h.getHints)
	mux.HandleFunc("PUT "+hintsPath, h.putHints)
	return mux
}

type handler struct {
	st    Store
	scope string
	stats *Stats
	opts  options
}

// fail answers err: 404 for a miss, 400 for a refused request, else 500.
func (h *handler) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	}
	h.stats.Errors.Add(1)
	http.Error(w, err.Error(), code)
}

func (h *handler) timed() func() {
	start := time.Now()
	return func() { h.stats.Nanos.Add(int64(time.Since(start))) }
}

func (h *handler) getAction(w http.ResponseWriter, r *http.Request) {
	defer h.timed()()
	id, err := parseID("action id", r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	e, err := h.st.GetAction(r.Context(), h.scope, id)
	if errors.Is(err, ErrNotFound) {
		h.stats.Misses.Add(1)
	}
	if err != nil {
		h.fail(w, err)
		return
	}
	h.stats.Hits.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ActionJSON{OutputID: hex.EncodeToString(e.OutputID), Size: e.Size, Time: e.Time.UTC()})
}

func (h *handler) getOutput(w http.ResponseWriter, r *http.Request) {
	defer h.timed()()
	id, err := parseID("output id", r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	body, size, err := h.st.OpenOutput(r.Context(), h.scope, id)
	if err != nil {
		if ce := (*CorruptError)(nil); errors.As(err, &ce) {
			h.stats.Errors.Add(1)
		}
		h.fail(w, err)
		return
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	n, err := io.Copy(w, body)
	h.stats.BytesRead.Add(n)
	if err != nil {
		h.stats.Errors.Add(1)
	}
}

func (h *handler) putAction(w http.ResponseWriter, r *http.Request) {
	defer h.timed()()
	id, err := parseID("action id", r.PathValue("id"))
	if err != nil {
		h.fail(w, err)
		return
	}
	out, err := parseID("output id", r.Header.Get(OutputIDHeader))
	if err != nil {
		h.fail(w, err)
		return
	}
	switch {
	case r.ContentLength < 0:
		h.fail(w, fmt.Errorf("%w: a put needs a Content-Length", ErrInvalid))
		return
	case r.ContentLength > h.opts.maxObjectSize:
		h.stats.Errors.Add(1)
		http.Error(w, fmt.Sprintf("output of %d bytes is over the limit of %d", r.ContentLength, h.opts.maxObjectSize), http.StatusRequestEntityTooLarge)
		return
	}
	if err := h.st.Put(r.Context(), h.scope, id, out, r.ContentLength, r.Body); err != nil {
		h.fail(w, err)
		return
	}
	h.stats.Puts.Add(1)
	h.stats.BytesWritten.Add(r.ContentLength)
	w.WriteHeader(http.StatusNoContent)
}

// Client is the other end of a Handler, on a unix socket. It is safe for
// concurrent use and keeps its connections open between requests.
type Client struct {
	hc *http.Client
}

// StatusError is the error of a response that is neither a hit nor a miss.
type StatusError struct {
	Code    int
	Message string
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("build cache store: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// NewClient returns a client of the Handler listening on socketPath. It
// does not connect until its first request. Options: WithTimeout.
func NewClient(socketPath string, opts ...Option) *Client {
	o := newOptions(opts)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: o.timeout}}
}

// Close closes the client's idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// url is the request URL; the host is a placeholder, the socket is the
// address.
func url(p string, id []byte) string { return "http://buildcache" + p + hex.EncodeToString(id) }

func (c *Client) do(ctx context.Context, method, u string, body io.Reader, size int64, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build cache store: %w", err)
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("build cache store: %w", err)
	}
	return resp, nil
}

// statusErr turns a response that is not a success into an error: one
// wrapping ErrNotFound for 404, a *StatusError otherwise.
func statusErr(resp *http.Response, what string) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
}

// GetAction returns the entry of actionID, or an error wrapping
// ErrNotFound.
func (c *Client) GetAction(ctx context.Context, actionID []byte) (Entry, error) {
	resp, err := c.do(ctx, http.MethodGet, url(actionsPath, actionID), nil, 0, nil)
	if err != nil {
		return Entry{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Entry{}, statusErr(resp, fmt.Sprintf("action %x", actionID))
	}
	defer resp.Body.Close()
	var a ActionJSON
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&a); err != nil {
		return Entry{}, fmt.Errorf("build cache store: action %x: %w", actionID, err)
	}
	out, err := parseID("output id", a.OutputID)
	if err != nil || a.Size < 0 {
		return Entry{}, fmt.Errorf("build cache store: action %x: bad entry %+v", actionID, a)
	}
	return Entry{OutputID: out, Size: a.Size, Time: a.Time}, nil
}

// OpenOutput opens the output outputID and returns its size, or an error
// wrapping ErrNotFound. The caller closes the body and checks its digest
// (the store did, but the bytes crossed a socket since).
func (c *Client) OpenOutput(ctx context.Context, outputID []byte) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, url(outputsPath, outputID), nil, 0, nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, statusErr(resp, fmt.Sprintf("output %x", outputID))
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("build cache store: output %x: no Content-Length", outputID)
	}
	return resp.Body, resp.ContentLength, nil
}

// Put stores the size bytes of body as outputID under actionID.
func (c *Client) Put(ctx context.Context, actionID, outputID []byte, size int64, body io.Reader) error {
	h := http.Header{OutputIDHeader: {hex.EncodeToString(outputID)}}
	resp, err := c.do(ctx, http.MethodPut, url(actionsPath, actionID), body, size, h)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return statusErr(resp, fmt.Sprintf("put %x", actionID))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}
