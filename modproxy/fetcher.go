package modproxy

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/goproxy/goproxy"
	"golang.org/x/mod/module"
)

// fetcher wraps goproxy's GoFetcher: it times upstream work for the build's stats and
// makes concurrent downloads of one module version in one scope fetch it once. A module
// the build may fetch from its host (AllowPrivate) is fetched so, with its credentials.
type fetcher struct {
	p    *Proxy
	next goproxy.Fetcher
}

// via runs fn with the fetcher for path in the request's build: its private one, or
// upstream's.
func (f *fetcher) via(ctx context.Context, st *reqState, path string, fn func(goproxy.Fetcher) error) error {
	if priv, ok := f.p.privateFor(st.buildID, path); ok {
		return f.p.privateFetch(ctx, st.scope, priv, fn)
	}
	return fn(f.next)
}

// Query implements goproxy.Fetcher.
func (f *fetcher) Query(ctx context.Context, path, query string) (string, time.Time, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	start := f.p.opts.now()
	var version string
	var t time.Time
	err = f.via(ctx, st, path, func(next goproxy.Fetcher) (err error) {
		version, t, err = next.Query(ctx, path, query)
		return err
	})
	st.upstreamTime += f.p.opts.now().Sub(start)
	st.fetched = st.fetched || err == nil
	return version, t, err
}

// List implements goproxy.Fetcher.
func (f *fetcher) List(ctx context.Context, path string) ([]string, error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, err
	}
	start := f.p.opts.now()
	var versions []string
	err = f.via(ctx, st, path, func(next goproxy.Fetcher) (err error) {
		versions, err = next.List(ctx, path)
		return err
	})
	st.upstreamTime += f.p.opts.now().Sub(start)
	st.fetched = st.fetched || err == nil
	return versions, err
}

// Download implements goproxy.Fetcher. The per-version lock is held until goproxy closes
// the files, that is after it has cached them; a request that waited for it finds the
// files in the cache and serves them from there.
func (f *fetcher) Download(ctx context.Context, path, version string) (info, mod, zip io.ReadSeekCloser, err error) {
	st, err := stateFrom(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	base, err := escapedBase(path, version)
	if err != nil {
		return nil, nil, nil, err
	}
	unlock, err := f.p.locks.lock(ctx, st.scope+"\x00"+base)
	if err != nil {
		return nil, nil, nil, err
	}
	release := sync.OnceFunc(unlock)
	defer func() {
		if err != nil {
			release()
		}
	}()

	if files, ok := f.p.cachedVersion(st.scope, base); ok {
		st.skipPut = true
		return onClose(files[0], release), onClose(files[1], release), onClose(files[2], release), nil
	}

	start := f.p.opts.now()
	err = f.via(ctx, st, path, func(next goproxy.Fetcher) (err error) {
		info, mod, zip, err = next.Download(ctx, path, version)
		return err
	})
	st.upstreamTime += f.p.opts.now().Sub(start)
	if err != nil {
		return nil, nil, nil, err
	}
	st.fetched = true
	for _, c := range []io.ReadSeeker{info, mod, zip} {
		n, err := c.Seek(0, io.SeekEnd)
		if err == nil {
			st.downloadBytes += n
		}
		if _, err := c.Seek(0, io.SeekStart); err != nil {
			info.Close()
			mod.Close()
			zip.Close()
			return nil, nil, nil, err
		}
	}
	return onClose(info, release), onClose(mod, release), onClose(zip, release), nil
}

// escapedBase is the cache name of a version without extension: "<path>/@v/<version>".
func escapedBase(path, version string) (string, error) {
	ep, err := module.EscapePath(path)
	if err != nil {
		return "", err
	}
	ev, err := module.EscapeVersion(version)
	if err != nil {
		return "", err
	}
	return ep + "/@v/" + ev, nil
}

// cachedVersion opens the .info, .mod and .zip of a version if the scope has all three.
func (p *Proxy) cachedVersion(scope, base string) ([3]io.ReadSeekCloser, bool) {
	var files [3]io.ReadSeekCloser
	for i, ext := range []string{".info", ".mod", ".zip"} {
		f, err := p.open(scope, base+ext)
		if err != nil {
			for _, g := range files[:i] {
				g.Close()
			}
			return files, false
		}
		files[i] = f
	}
	return files, true
}

// onClose runs fn after closing c.
func onClose(c io.ReadSeekCloser, fn func()) io.ReadSeekCloser {
	return struct {
		io.ReadSeeker
		io.Closer
	}{c, closerFunc(func() error {
		defer fn()
		return c.Close()
	})}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// keyLocks is a set of mutexes by key that disappear when nobody holds or waits for them.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sem  chan struct{}
	refs int
}

// lock takes the key's lock, or fails when ctx ends first; unlock releases it.
func (l *keyLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*keyLock)
	}
	k := l.m[key]
	if k == nil {
		k = &keyLock{sem: make(chan struct{}, 1)}
		l.m[key] = k
	}
	k.refs++
	l.mu.Unlock()

	done := func() {
		l.mu.Lock()
		if k.refs--; k.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case k.sem <- struct{}{}:
		return func() { <-k.sem; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}
