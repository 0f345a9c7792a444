package server

import (
	"net"
	"sync"
)

// connListener is a net.Listener of connections handed to it, not dialed:
// the connections a build step makes to a socket that BuildKit forwards
// through the build's session. An http.Server serves it like any other
// listener; nothing listens on the host.
type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// serve hands c to the listener's Accept; after Close it closes c.
func (l *connListener) serve(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept implements net.Listener.
func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *connListener) Addr() net.Addr { return connAddr{} }

type connAddr struct{}

func (connAddr) Network() string { return "session" }
func (connAddr) String() string  { return "build session" }
