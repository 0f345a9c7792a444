package buildcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
)

// Hints: the action ids one build of a program used (the gets the go
// command made and the puts it made), kept in the store under a key the
// server names (the program: its repository, directory and package), so
// that the next build of that program, on a builder with an empty local
// cache, fetches them ahead, concurrently, while the go command starts,
// instead of one by one as the go command asks.
//
//	GET /v1/hints   200 with the ids of the Handler's key (IDSize bytes
//	                each, concatenated), or 404
//	PUT /v1/hints   the ids, replacing the key's; 204
//
// A Handler without WithHints answers both 404. The key is the Handler's,
// never the request's; the list is an entry of the Handler's scope, so
// what one scope's builds write only its builds read. Bad hints cost
// misses, never a wrong build: every prefetched entry is a normal lookup.
const hintsPath = "/v1/hints"

// MaxHints is the most ids a hint list holds.
const MaxHints = 1 << 16

// WithHints makes a Handler serve the hint list of key (see hintsPath).
func WithHints(key string) Option { return func(o *options) { o.hintsKey = key } }

// hintsActionID is the action id the hint list of key is stored under: a
// hash with a prefix no action id of Go's is made from.
func hintsActionID(key string) []byte {
	sum := sha256.Sum256([]byte("buildsvc build-cache hints\x00" + key))
	return sum[:]
}

func (h *handler) getHints(w http.ResponseWriter, r *http.Request) {
	defer h.timed()()
	if h.opts.hintsKey == "" {
		http.NotFound(w, r)
		return
	}
	e, err := h.st.GetAction(r.Context(), h.scope, hintsActionID(h.opts.hintsKey))
	if err != nil {
		h.fail(w, err)
		return
	}
	body, size, err := h.st.OpenOutput(r.Context(), h.scope, e.OutputID)
	if err != nil {
		h.fail(w, err)
		return
	}
	defer body.Close()
	if size%IDSize != 0 || size > MaxHints*IDSize {
		h.fail(w, fmt.Errorf("%w: hint list of %d bytes", ErrNotFound, size))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", fmt.Sprint(size))
	_, _ = io.Copy(w, body)
}

func (h *handler) putHints(w http.ResponseWriter, r *http.Request) {
	defer h.timed()()
	if h.opts.hintsKey == "" {
		http.NotFound(w, r)
		return
	}
	if r.ContentLength < 0 || r.ContentLength%IDSize != 0 || r.ContentLength > MaxHints*IDSize {
		h.fail(w, fmt.Errorf("%w: a hint list is a Content-Length of whole ids, at most %d", ErrInvalid, MaxHints))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
	if err != nil || int64(len(body)) != r.ContentLength {
		h.fail(w, fmt.Errorf("%w: short hint list", ErrInvalid))
		return
	}
	sum := sha256.Sum256(body)
	if err := h.st.Put(r.Context(), h.scope, hintsActionID(h.opts.hintsKey), sum[:], int64(len(body)), bytes.NewReader(body)); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Hints returns the hint list of the Handler's key, or an error wrapping
// ErrNotFound when it has none.
func (c *Client) Hints(ctx context.Context) ([][]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, "http://buildcache"+hintsPath, nil, 0, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusErr(resp, "hints")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxHints*IDSize+1))
	if err != nil {
		return nil, fmt.Errorf("build cache store: hints: %w", err)
	}
	if len(body)%IDSize != 0 || len(body) > MaxHints*IDSize {
		return nil, fmt.Errorf("build cache store: hints: %d bytes", len(body))
	}
	ids := make([][]byte, 0, len(body)/IDSize)
	for i := 0; i < len(body); i += IDSize {
		ids = append(ids, body[i:i+IDSize])
	}
	return ids, nil
}

// PutHints replaces the hint list of the Handler's key with ids (at most
// MaxHints of them are sent).
func (c *Client) PutHints(ctx context.Context, ids [][]byte) error {
	ids = ids[:min(len(ids), MaxHints)]
	body := make([]byte, 0, len(ids)*IDSize)
	for _, id := range ids {
		if len(id) != IDSize {
			return fmt.Errorf("build cache store: hint %x is not %d bytes", id, IDSize)
		}
		body = append(body, id...)
	}
	resp, err := c.do(ctx, http.MethodPut, "http://buildcache"+hintsPath, bytes.NewReader(body), int64(len(body)), nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return statusErr(resp, "put hints")
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}
