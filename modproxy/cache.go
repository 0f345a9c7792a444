package modproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/goproxy/goproxy"
)

// touchAfter is how stale an entry's mtime (its last use) may get before a hit renews it.
const touchAfter = time.Minute

// staleTemp is the age after which a leftover temporary file is removed by Clean.
const staleTemp = time.Hour

// cacher is goproxy's Cacher over dir/scopes/<scope>/, the scope taken from the request.
type cacher struct{ p *Proxy }

// file returns the path of a cache entry of scope.
func (p *Proxy) file(scope, name string) (string, error) {
	if !ValidScope(scope) || !fs.ValidPath(name) || name == "." {
		return "", fmt.Errorf("modproxy: invalid cache entry %q/%q", scope, name)
	}
	return filepath.Join(p.scopeDir, scope, filepath.FromSlash(name)), nil
}

// cachedFile is what Get returns: goproxy uses Seek (ranges), Size and ModTime.
type cachedFile struct {
	*os.File
	fi fs.FileInfo
}

func (f cachedFile) Size() int64        { return f.fi.Size() }
func (f cachedFile) ModTime() time.Time { return f.fi.ModTime() }

// Get implements goproxy.Cacher; a hit renews the entry's mtime, which Clean reads as last use.
func (c *cacher) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, err
	}
	f, err := c.p.open(st.scope, name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// open opens a cache entry of scope and marks it used.
func (p *Proxy) open(scope, name string) (cachedFile, error) {
	file, err := p.file(scope, name)
	if err != nil {
		return cachedFile{}, err
	}
	f, err := os.Open(file)
	if err != nil {
		return cachedFile{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return cachedFile{}, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return cachedFile{}, fmt.Errorf("modproxy: cache entry %s: %w", name, fs.ErrNotExist)
	}
	if now := p.opts.now(); now.Sub(fi.ModTime()) > touchAfter {
		if err := os.Chtimes(file, now, now); err != nil {
			p.opts.logger.Warn("modproxy: renew cache entry", "file", file, "error", err)
		}
	}
	return cachedFile{File: f, fi: fi}, nil
}

// Put implements goproxy.Cacher: an atomic write into the request's scope.
func (c *cacher) Put(ctx context.Context, name string, content io.ReadSeeker) error {
	st, err := stateFrom(ctx)
	if err != nil {
		return err
	}
	if st.skipPut {
		return nil
	}
	if strings.HasPrefix(name, "sumdb/") {
		st.sumdbFetched = true
	}
	file, err := c.p.file(st.scope, name)
	if err != nil {
		return err
	}
	var old int64
	if fi, err := os.Stat(file); err == nil {
		old = fi.Size()
	}
	if err := goproxy.DirCacher(filepath.Join(c.p.scopeDir, st.scope)).Put(ctx, name, content); err != nil {
		return fmt.Errorf("modproxy: cache %s: %w", name, err)
	}
	if fi, err := os.Stat(file); err == nil {
		c.p.usage.Add(fi.Size() - old)
	}
	return nil
}

// serveSumDBCache serves immutable checksum database answers (lookups and tiles) from the
// scope's cache; goproxy itself always asks upstream. It reports whether it answered.
func (p *Proxy) serveSumDBCache(w http.ResponseWriter, r *http.Request, st *reqState, rest string) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if path.Clean("/"+rest) != "/"+rest {
		return false
	}
	after, ok := strings.CutPrefix(rest, "sumdb/")
	if !ok {
		return false
	}
	_, endpoint, _ := strings.Cut(after, "/")
	var contentType string
	switch {
	case strings.HasPrefix(endpoint, "lookup/"):
		contentType = "text/plain; charset=utf-8"
	case strings.HasPrefix(endpoint, "tile/"):
		contentType = "application/octet-stream"
	default:
		return false
	}
	f, err := p.open(st.scope, rest)
	if err != nil {
		return false
	}
	defer f.Close()
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "public, max-age=86400")
	http.ServeContent(w, r, "", f.ModTime(), f)
	return true
}

// CleanResult says what [Proxy.Clean] did.
type CleanResult struct {
	Removed      int   // entries evicted
	RemovedBytes int64 // their size
	Entries      int   // entries left
	Bytes        int64 // their size
}

type entry struct {
	path    string
	size    int64
	lastUse time.Time
}

// isTemp reports whether a file name is one of goproxy's temporary files.
func isTemp(name string) bool { return strings.HasPrefix(name, ".") }

// walk lists the cache entries and directories; temporary files go to temps.
func (p *Proxy) walk(ctx context.Context) (entries []entry, dirs, temps []string, err error) {
	err = filepath.WalkDir(p.scopeDir, func(file string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) { // removed under us
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if file != p.scopeDir {
				dirs = append(dirs, file)
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		if isTemp(d.Name()) {
			if p.opts.now().Sub(fi.ModTime()) > staleTemp {
				temps = append(temps, file)
			}
			return nil
		}
		entries = append(entries, entry{path: file, size: fi.Size(), lastUse: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("modproxy: walk cache: %w", err)
	}
	return entries, dirs, temps, nil
}

// DiskUsage returns the size and number of cache entries (all scopes).
func (p *Proxy) DiskUsage() (bytes int64, entries int, err error) {
	list, _, _, err := p.walk(context.Background())
	if err != nil {
		return 0, 0, err
	}
	for _, e := range list {
		bytes += e.size
	}
	p.usage.Store(bytes)
	return bytes, len(list), nil
}

// Clean evicts entries unused for longer than maxAge, then the least recently used ones
// while the cache holds more than maxBytes (see [WithLimits]); a hit counts as a use. It
// also removes stale temporary files and empty directories. Run it periodically.
func (p *Proxy) Clean(ctx context.Context) (CleanResult, error) {
	var res CleanResult
	entries, dirs, temps, err := p.walk(ctx)
	if err != nil {
		return res, err
	}
	for _, t := range temps {
		os.Remove(t)
	}
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].lastUse.Equal(entries[j].lastUse) {
			return entries[i].lastUse.Before(entries[j].lastUse)
		}
		return entries[i].path < entries[j].path
	})
	var total int64
	for _, e := range entries {
		total += e.size
	}
	now := p.opts.now()
	maxBytes, maxAge := p.opts.maxBytes, p.opts.maxAge
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			p.usage.Store(total)
			return res, err
		}
		tooOld := maxAge > 0 && now.Sub(e.lastUse) > maxAge
		tooBig := maxBytes > 0 && total > maxBytes
		if !tooOld && !tooBig {
			res.Entries++
			res.Bytes += e.size
			continue
		}
		if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.usage.Store(total)
			return res, fmt.Errorf("modproxy: evict: %w", err)
		}
		total -= e.size
		res.Removed++
		res.RemovedBytes += e.size
	}
	p.usage.Store(total)
	// Deepest first, so a parent is empty once its children are gone; non-empty ones stay.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		os.Remove(d)
	}
	if tmp, err := os.ReadDir(p.tmpDir); err == nil {
		for _, t := range tmp {
			if fi, err := t.Info(); err == nil && now.Sub(fi.ModTime()) > staleTemp {
				os.RemoveAll(filepath.Join(p.tmpDir, t.Name()))
			}
		}
	}
	p.opts.logger.Debug("modproxy: cleaned cache", "removed", res.Removed, "removed_bytes", res.RemovedBytes, "entries", res.Entries, "bytes", res.Bytes)
	return res, nil
}
