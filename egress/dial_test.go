package egress

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

// countingListener is a listener on 127.0.0.1 that records the remote
// address of every connection it accepts.
type countingListener struct {
	net.Listener
	accepted chan string
}

func listen(t *testing.T) *countingListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cl := &countingListener{Listener: l, accepted: make(chan string, 16)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cl.accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	return cl
}

func (l *countingListener) port() int { return l.Addr().(*net.TCPAddr).Port }

// assertNoConnection proves the listener saw no connection before now: it
// connects itself and sees its own connection first (the kernel queues
// connections in order, so a refused dial that had connected would come
// before it).
func (l *countingListener) assertNoConnection(t *testing.T) {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-l.accepted:
		if got != c.LocalAddr().String() {
			t.Errorf("the listener accepted a connection from %s before the probe's from %s", got, c.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the listener accepted nothing")
	}
}

// The dialer's hook refuses loopback before connecting: the listener on
// 127.0.0.1 sees no connection, dialled by address or by a name that
// resolves to it; with the allowance (and the port) it does.
func TestDialerChecksBeforeConnecting(t *testing.T) {
	l := listen(t)
	port := strconv.Itoa(l.port())
	refusals := []struct {
		name  string
		pol   Policy
		addr  string
		rule  Rule
		netwk string
	}{
		{"loopback address", For("git", Allowance{AnyPort: true}), "127.0.0.1:" + port, RuleLoopback, "tcp"},
		{"name of loopback", For("git", Allowance{AnyPort: true}), "localhost:" + port, RuleLoopback, "tcp"},
		{"IPv4-mapped loopback", For("git", Allowance{AnyPort: true}), "[::ffff:127.0.0.1]:" + port, RuleLoopback, "tcp"},
		{"tcp4", For("git", Allowance{AnyPort: true}), "127.0.0.1:" + port, RuleLoopback, "tcp4"},
		{"loopback allowed, port not", For("git", Allowance{Loopback: true}), "127.0.0.1:" + port, RulePort, "tcp"},
		{"private allowed, loopback not", For("git", Allowance{Private: true, AnyPort: true}), "127.0.0.1:" + port, RuleLoopback, "tcp"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.pol.Dialer().DialContext(t.Context(), tt.netwk, tt.addr)
			var r *Refused
			if !errors.As(err, &r) || r.Rule != tt.rule {
				t.Fatalf("dial %s: %v, want refused by %s", tt.addr, err, tt.rule)
			}
			l.assertNoConnection(t)
		})
	}

	for _, tt := range []struct {
		name  string
		allow Allowance
		addr  string
	}{
		{"loopback and any port", Allowance{Loopback: true, AnyPort: true}, "127.0.0.1:" + port},
		{"loopback and the port", Allowance{Loopback: true, Ports: []int{l.port()}}, "127.0.0.1:" + port},
		{"name of loopback, allowed", Allowance{Loopback: true, AnyPort: true}, "localhost:" + port},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := For("git", tt.allow).Dialer().DialContext(t.Context(), "tcp4", tt.addr)
			if err != nil {
				t.Fatalf("dial %s with %+v: %v", tt.addr, tt.allow, err)
			}
			defer c.Close()
			select {
			case got := <-l.accepted:
				if got != c.LocalAddr().String() {
					t.Errorf("accepted %s, want %s", got, c.LocalAddr())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the listener saw no connection")
			}
		})
	}
}

// Only TCP is dialled; an address the hook cannot read is refused.
func TestControlRefusesWhatItCannotCheck(t *testing.T) {
	p := For("git", Allowance{Loopback: true, AnyPort: true})
	if err := p.control("udp", "127.0.0.1:53", nil); !errors.Is(err, ErrNotChecked) {
		t.Errorf("udp: %v", err)
	}
	if err := p.control("tcp", "localhost:80", nil); !errors.Is(err, ErrNotChecked) {
		t.Errorf("a name: %v", err)
	}
	if err := p.control("tcp", "127.0.0.1:80", nil); err != nil {
		t.Errorf("allowed: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(3, 2)
	ctx := t.Context()
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	a1, err := l.Acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := l.Acquire(ctx, "a")
	// a has its share: a third lookup of a waits, b's does not.
	if _, err := l.Acquire(short(), "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a's third: %v, want to wait for a's share", err)
	}
	b1, err := l.Acquire(short(), "b")
	if err != nil {
		t.Fatalf("b's first: %v", err)
	}
	// The whole is used up: c waits too.
	if _, err := l.Acquire(short(), "c"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("c's first: %v, want to wait for the whole", err)
	}
	// A waiting lookup gets its slot once one is released.
	got := make(chan error, 1)
	go func() {
		release, err := l.Acquire(ctx, "c")
		if err == nil {
			release()
		}
		got <- err
	}()
	a1()
	a1() // twice is once
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	a2()
	b1()
	if n := len(l.keys); n != 0 {
		t.Errorf("%d keys left after every release", n)
	}
	if total, per := NewLimiter(0, 9).Limits(); total != 1 || per != 1 {
		t.Errorf("NewLimiter(0, 9) limits = %d, %d", total, per)
	}
}
