package egress

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// DialTimeout bounds one connection attempt (the lookup's context bounds
// the whole).
const DialTimeout = 10 * time.Second

// Dialer returns a dialer that checks every connection against p in its
// Control hook, which runs after DNS resolution, on the address about to be
// connected to, before the socket connects: a refused address gets no
// packet, and the address checked is the address dialled, so DNS rebinding
// between a check and the dial is impossible. A name with several addresses
// tries the next one after a refusal; the error of a refused dial wraps the
// *Refused.
func (p Policy) Dialer() *net.Dialer {
	return &net.Dialer{
		Timeout:   DialTimeout,
		KeepAlive: -1, // lookups are short
		Control:   p.control,
	}
}

func (p Policy) control(network, address string, _ syscall.RawConn) error {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fmt.Errorf("egress: network %s: %w", network, ErrNotChecked)
	}
	addr, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: %w", ErrNotChecked)
	}
	return p.Check(addr)
}
