package buildcache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DiskStore is a Store in a directory:
//
//	<dir>/v1/<scope key>/scope          the scope's name, for people
//	<dir>/v1/<scope key>/a/<xx>/<id>    an action: its entry as JSON
//	<dir>/v1/<scope key>/o/<xx>/<id>    an output, named by its SHA-256
//	<dir>/tmp/                          files being written
//
// where the scope key is the hex SHA-256 of the scope (any string is a
// scope, none can name another's directory) and xx the id's first byte.
// Every file is written to tmp and renamed into place, so a reader sees a
// whole file or none. An output is hashed on every open; one that does not
// match its name is deleted and reported as a miss (CorruptError). A hit
// sets the files' modification times, which Clean reads as the last use.
type DiskStore struct {
	dir string
}

var _ Store = (*DiskStore)(nil)

// New returns the store in dir, creating dir if needed.
func New(dir string) (*DiskStore, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: no store directory", ErrInvalid)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("build cache store: %w", err)
	}
	for _, d := range []string{abs, filepath.Join(abs, "v1"), filepath.Join(abs, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("build cache store: %w", err)
		}
	}
	return &DiskStore{dir: abs}, nil
}

// Dir is the store's directory.
func (d *DiskStore) Dir() string { return d.dir }

// actionRecord is an action file's content.
type actionRecord struct {
	OutputID string `json:"output"`
	Size     int64  `json:"size"`
	Time     int64  `json:"time"` // Unix nanoseconds
}

func (d *DiskStore) scopeDir(scope string) (string, error) {
	if scope == "" {
		return "", fmt.Errorf("%w: empty scope", ErrInvalid)
	}
	sum := sha256.Sum256([]byte(scope))
	return filepath.Join(d.dir, "v1", hex.EncodeToString(sum[:])), nil
}

// path is the file of id, kind "a" or "o", in scope.
func (d *DiskStore) path(scope, kind string, id []byte) (string, error) {
	sd, err := d.scopeDir(scope)
	if err != nil {
		return "", err
	}
	h := hex.EncodeToString(id)
	return filepath.Join(sd, kind, h[:2], h), nil
}

// GetAction implements Store. A hit whose output is gone (cleaned) is a
// miss, and the action is removed.
func (d *DiskStore) GetAction(ctx context.Context, scope string, actionID []byte) (Entry, error) {
	if err := checkID("action id", actionID); err != nil {
		return Entry{}, err
	}
	p, err := d.path(scope, "a", actionID)
	if err != nil {
		return Entry{}, err
	}
	dt, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("action %x: %w", actionID, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("build cache action %x: %w", actionID, err)
	}
	var rec actionRecord
	out, herr := []byte(nil), error(nil)
	if err = json.Unmarshal(dt, &rec); err == nil {
		out, herr = hex.DecodeString(rec.OutputID)
	}
	if err != nil || herr != nil || len(out) != IDSize {
		_ = os.Remove(p)
		return Entry{}, fmt.Errorf("action %x: unreadable record, removed: %w", actionID, ErrNotFound)
	}
	op, _ := d.path(scope, "o", out)
	fi, err := os.Stat(op)
	if err != nil || fi.Size() != rec.Size {
		_ = os.Remove(p)
		return Entry{}, fmt.Errorf("action %x: output %x is gone: %w", actionID, out, ErrNotFound)
	}
	touch(p)
	touch(op)
	return Entry{OutputID: out, Size: rec.Size, Time: time.Unix(0, rec.Time)}, nil
}

// OpenOutput implements Store. It reads the whole object once to check
// its digest before returning it.
func (d *DiskStore) OpenOutput(ctx context.Context, scope string, outputID []byte) (io.ReadCloser, int64, error) {
	if err := checkID("output id", outputID); err != nil {
		return nil, 0, err
	}
	p, err := d.path(scope, "o", outputID)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("output %x: %w", outputID, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("build cache output %x: %w", outputID, err)
	}
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("build cache output %x: %w", outputID, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, outputID) {
		f.Close()
		_ = os.Remove(p)
		return nil, 0, &CorruptError{Scope: scope, OutputID: outputID, Digest: got}
	}
	touch(p)
	return f, n, nil
}

// Put implements Store.
func (d *DiskStore) Put(ctx context.Context, scope string, actionID, outputID []byte, size int64, body io.Reader) error {
	if err := checkID("action id", actionID); err != nil {
		return err
	}
	if err := checkID("output id", outputID); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrInvalid, size)
	}
	ap, err := d.path(scope, "a", actionID)
	if err != nil {
		return err
	}
	op, _ := d.path(scope, "o", outputID)
	if err := d.ensureScope(scope); err != nil {
		return err
	}

	// The body goes to a temporary file, hashed on the way; only a body
	// that is what its id says is renamed into place.
	h := sha256.New()
	err = d.writeFile(op, func(w io.Writer) error {
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(ctxReader{ctx, body}, size+1))
		switch {
		case err != nil:
			return fmt.Errorf("read body: %w", err)
		case n != size:
			return fmt.Errorf("%w: body of output %x is %s bytes, want %d", ErrInvalid, outputID, sizeString(n, size), size)
		case !bytes.Equal(h.Sum(nil), outputID):
			return fmt.Errorf("%w: body hashes to %x, not to its output id %x", ErrInvalid, h.Sum(nil), outputID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build cache put %x: %w", actionID, err)
	}
	rec, _ := json.Marshal(actionRecord{OutputID: hex.EncodeToString(outputID), Size: size, Time: time.Now().UnixNano()})
	if err := d.writeFile(ap, func(w io.Writer) error { _, err := w.Write(rec); return err }); err != nil {
		return fmt.Errorf("build cache put %x: %w", actionID, err)
	}
	return nil
}

func sizeString(n, size int64) string {
	if n > size {
		return "more than " + fmt.Sprint(size)
	}
	return fmt.Sprint(n)
}

// ensureScope makes the scope's directory and its name file.
func (d *DiskStore) ensureScope(scope string) error {
	sd, err := d.scopeDir(scope)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(sd, "scope")); err == nil {
		return nil
	}
	if err := os.MkdirAll(sd, 0o700); err != nil {
		return fmt.Errorf("build cache scope: %w", err)
	}
	return d.writeFile(filepath.Join(sd, "scope"), func(w io.Writer) error {
		_, err := io.WriteString(w, scope+"\n")
		return err
	})
}

// writeFile writes p with WriteFile, private to the server's user.
func (d *DiskStore) writeFile(p string, write func(io.Writer) error) error {
	return WriteFile(filepath.Join(d.dir, "tmp"), p, 0o700, 0o600, write)
}

// touch marks p as used now.
func touch(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

// CleanResult is what Clean removed.
type CleanResult struct {
	Objects, Actions int
	Bytes            int64
}

// staleTemp is the age of a temporary file Clean removes: a write that
// died.
const staleTemp = time.Hour

// file is one file Clean considers.
type file struct {
	path  string
	size  int64
	mtime time.Time
}

// Clean bounds the store: it removes the objects not used for maxAge (0:
// no age limit), then the least recently used ones until the store holds
// at most maxBytes (0: no size limit), then the actions whose output is
// gone or that were not used for maxAge, and temporary files of writes
// that died. It is safe to run while the store is in use: a reader that
// has an object open keeps reading it.
func (d *DiskStore) Clean(ctx context.Context, maxBytes int64, maxAge time.Duration) (CleanResult, error) {
	var res CleanResult
	objects, actions, err := d.walk(ctx)
	if err != nil {
		return res, err
	}
	now := time.Now()
	old := func(f file) bool { return maxAge > 0 && now.Sub(f.mtime) > maxAge }
	// An object's cost is its size and its actions': they go with it.
	output := make(map[string]string, len(actions))
	cost := make(map[string]int64, len(objects))
	var total int64
	for _, f := range actions {
		output[f.path] = d.outputOf(f.path)
		cost[output[f.path]] += f.size
		total += f.size
	}
	for _, f := range objects {
		total += f.size
	}
	slices.SortFunc(objects, func(a, b file) int { return cmp.Or(a.mtime.Compare(b.mtime), strings.Compare(a.path, b.path)) })
	present := make(map[string]bool, len(objects))
	for _, f := range objects {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if !old(f) && (maxBytes <= 0 || total <= maxBytes) {
			present[f.path] = true
			continue
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("build cache clean: %w", err)
		}
		total -= f.size + cost[f.path]
		res.Objects++
		res.Bytes += f.size
	}
	for _, f := range actions {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if !old(f) && present[output[f.path]] {
			continue
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("build cache clean: %w", err)
		}
		res.Actions++
		res.Bytes += f.size
	}
	tmps, _ := os.ReadDir(filepath.Join(d.dir, "tmp"))
	for _, e := range tmps {
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) > staleTemp {
			_ = os.Remove(filepath.Join(d.dir, "tmp", e.Name()))
		}
	}
	return res, nil
}

// outputOf is the object file the action file at p names, or "".
func (d *DiskStore) outputOf(p string) string {
	dt, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	var rec actionRecord
	if json.Unmarshal(dt, &rec) != nil || len(rec.OutputID) != 2*IDSize {
		return ""
	}
	// The action's scope directory is three levels up: <scope>/a/xx/id.
	sd := filepath.Dir(filepath.Dir(filepath.Dir(p)))
	return filepath.Join(sd, "o", rec.OutputID[:2], rec.OutputID)
}

// walk lists every object and action file of every scope.
func (d *DiskStore) walk(ctx context.Context) (objects, actions []file, _ error) {
	root := filepath.Join(d.dir, "v1")
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(rel, string(filepath.Separator))
		if e.IsDir() || len(parts) != 4 {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		f := file{path: p, size: fi.Size(), mtime: fi.ModTime()}
		switch parts[1] {
		case "o":
			objects = append(objects, f)
		case "a":
			actions = append(actions, f)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("build cache walk: %w", err)
	}
	return objects, actions, nil
}

// DiskUsage is the bytes of every object and action file of the store.
func (d *DiskStore) DiskUsage(ctx context.Context) (int64, error) {
	objects, actions, err := d.walk(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, f := range append(objects, actions...) {
		n += f.size
	}
	return n, nil
}
