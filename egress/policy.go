// Package egress is how the build server itself connects out to git hosts:
// a host policy checked on the address of every connection after DNS
// resolution (so a name, a redirect or a DNS answer that changes between a
// check and the dial cannot reach what the policy refuses), a limit on
// concurrent lookups, server-wide and per tenant, and errors that say what
// kind of failure happened without quoting what the remote sent. ListRefs
// lists a repository's refs over git://, http(s) and ssh, with the
// credentials of one lookup (Auth): basic auth for its URL's origin only,
// an ssh key with the host key checked against known_hosts, extra roots
// for TLS.
//
// The default policy refuses loopback, link-local (with the cloud metadata
// addresses), private, unspecified, multicast, broadcast and other
// special-purpose addresses, and ports other than the protocol's usual ones.
// An Allowance widens it for loopback, private addresses and ports; nothing
// widens it for the rest.
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule is a rule of the host policy; it names the refusal in errors.
type Rule string

// The rules, in the order Check applies them.
const (
	// RuleMetadata refuses the cloud providers' instance metadata and
	// platform addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200,
	// 168.63.129.16), whatever else allows.
	RuleMetadata Rule = "metadata"
	// RuleUnspecified refuses 0.0.0.0/8 and ::, which reach the local host.
	RuleUnspecified Rule = "unspecified"
	// RuleLoopback refuses 127.0.0.0/8 and ::1 unless Allowance.Loopback.
	RuleLoopback Rule = "loopback"
	// RuleLinkLocal refuses 169.254.0.0/16 and fe80::/10.
	RuleLinkLocal Rule = "link-local"
	// RuleMulticast refuses 224.0.0.0/4 and ff00::/8.
	RuleMulticast Rule = "multicast"
	// RuleBroadcast refuses 255.255.255.255.
	RuleBroadcast Rule = "broadcast"
	// RuleReserved refuses other special-purpose ranges that are not
	// reachable on the internet (documentation, benchmarking, 240/4,
	// IPv4-compatible and Teredo IPv6, ...).
	RuleReserved Rule = "reserved"
	// RulePrivate refuses 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT)
	// and fc00::/7 unless Allowance.Private.
	RulePrivate Rule = "private"
	// RulePort refuses ports other than the protocol's usual ones unless
	// Allowance.AnyPort or Allowance.Ports allow them.
	RulePort Rule = "port"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// ranges are the address rules, in order; the first that contains an
// address decides.
var ranges = []struct {
	rule Rule
	nets []netip.Prefix
}{
	{RuleMetadata, prefixes("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32")},
	{RuleUnspecified, prefixes("0.0.0.0/8", "::/128")},
	{RuleLoopback, prefixes("127.0.0.0/8", "::1/128")},
	{RuleLinkLocal, prefixes("169.254.0.0/16", "fe80::/10")},
	{RuleMulticast, prefixes("224.0.0.0/4", "ff00::/8")},
	{RuleBroadcast, prefixes("255.255.255.255/32")},
	{RuleReserved, prefixes(
		"192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"::/96",         // IPv4-compatible (deprecated)
		"100::/64",      // discard
		"2001::/32",     // Teredo: tunnels to an IPv4 address the policy cannot see
		"2001:db8::/32", // documentation
		"fec0::/10",     // site-local (deprecated)
	)},
	{RulePrivate, prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")},
}

// embedding are IPv6 ranges that carry an IPv4 address a gateway connects
// to (NAT64, 6to4): the IPv4 address is checked too.
var embedding = []struct {
	net netip.Prefix
	at  int // byte offset of the IPv4 address
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12},
	{netip.MustParsePrefix("64:ff9b:1::/48"), 12},
	{netip.MustParsePrefix("2002::/16"), 2},
}

// UsualPorts are the ports a protocol connects to without an allowance.
// http and https share theirs, since one redirects to the other.
var UsualPorts = map[string][]int{
	"https": {443, 80},
	"http":  {443, 80},
	"git":   {9418},
	"ssh":   {22},
}

// Allowance widens the default policy. The zero value widens nothing.
type Allowance struct {
	// Loopback allows 127.0.0.0/8 and ::1.
	Loopback bool
	// Private allows 10/8, 172.16/12, 192.168/16, 100.64/10 and fc00::/7.
	Private bool
	// AnyPort allows every port.
	AnyPort bool
	// Ports are allowed besides the protocol's usual ones.
	Ports []int
}

// Add returns what a or b allows.
func (a Allowance) Add(b Allowance) Allowance {
	ports := slices.Concat(a.Ports, b.Ports)
	slices.Sort(ports)
	return Allowance{
		Loopback: a.Loopback || b.Loopback,
		Private:  a.Private || b.Private,
		AnyPort:  a.AnyPort || b.AnyPort,
		Ports:    slices.Compact(ports),
	}
}

// Validate reports a port outside 1-65535.
func (a Allowance) Validate() error {
	for _, p := range a.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("port %d is not between 1 and 65535", p)
		}
	}
	return nil
}

// ParsePorts parses a comma-separated list of ports ("8443, 19418"); empty
// is none.
func ParsePorts(s string) ([]int, error) {
	var ports []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%.20q is not a port (1-65535)", f)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// Policy is the host policy of the connections of one lookup: the default
// rules, the protocol's usual ports and an allowance.
type Policy struct {
	// Ports are the protocol's usual ports, always allowed.
	Ports []int
	// Allow widens the default rules.
	Allow Allowance
}

// For returns the policy of connections for a URL scheme (its UsualPorts)
// with allow.
func For(scheme string, allow Allowance) Policy {
	return Policy{Ports: UsualPorts[strings.ToLower(scheme)], Allow: allow}
}

// Refused is a connection the host policy refuses. Its message names the
// rule and the port, not the address: the address may come from a DNS
// answer the caller should not learn.
type Refused struct {
	// Rule is the rule that refuses the connection.
	Rule Rule
	// Addr is the address refused, for the server's own log.
	Addr netip.AddrPort
	// Allowed are the ports that were allowed, for RulePort.
	Allowed []int
}

var ruleWhat = map[Rule]string{
	RuleMetadata:    "a cloud metadata address",
	RuleUnspecified: "an unspecified address",
	RuleLoopback:    "a loopback address",
	RuleLinkLocal:   "a link-local address",
	RuleMulticast:   "a multicast address",
	RuleBroadcast:   "a broadcast address",
	RuleReserved:    "a reserved address",
	RulePrivate:     "a private address",
}

func (e *Refused) Error() string {
	if e.Rule == RulePort {
		return fmt.Sprintf("the host policy refuses port %d (allowed: %s)", e.Addr.Port(), e.AllowedPorts())
	}
	return "the host policy refuses connections to " + e.What()
}

// What is what the rule refuses: "a loopback address", "port 8080".
func (e *Refused) What() string {
	if e.Rule == RulePort {
		return fmt.Sprintf("port %d", e.Addr.Port())
	}
	return ruleWhat[e.Rule]
}

// AllowedPorts lists the ports that were allowed ("443, 80"), for RulePort.
func (e *Refused) AllowedPorts() string {
	allowed := make([]string, len(e.Allowed))
	for i, p := range e.Allowed {
		allowed[i] = strconv.Itoa(p)
	}
	return strings.Join(allowed, ", ")
}

// Check returns a *Refused if the policy refuses a connection to addr.
func (p Policy) Check(addr netip.AddrPort) error {
	if rule, ok := p.addrRule(addr.Addr()); !ok {
		return &Refused{Rule: rule, Addr: addr}
	}
	port := int(addr.Port())
	if p.Allow.AnyPort || slices.Contains(p.Ports, port) || slices.Contains(p.Allow.Ports, port) {
		return nil
	}
	return &Refused{Rule: RulePort, Addr: addr, Allowed: slices.Concat(p.Ports, p.Allow.Ports)}
}

// addrRule returns the rule that refuses ip, or ok.
func (p Policy) addrRule(ip netip.Addr) (Rule, bool) {
	if !ip.IsValid() {
		return RuleReserved, false
	}
	ip = ip.Unmap().WithZone("")
	if rule, ok := p.rangeRule(ip); !ok {
		return rule, false
	}
	for _, e := range embedding {
		if e.net.Contains(ip) {
			b := ip.As16()
			return p.rangeRule(netip.AddrFrom4([4]byte(b[e.at : e.at+4])))
		}
	}
	return "", true
}

func (p Policy) rangeRule(ip netip.Addr) (Rule, bool) {
	for _, r := range ranges {
		if !slices.ContainsFunc(r.nets, func(n netip.Prefix) bool { return n.Contains(ip) }) {
			continue
		}
		switch {
		case r.rule == RuleLoopback && p.Allow.Loopback, r.rule == RulePrivate && p.Allow.Private:
			return "", true
		}
		return r.rule, false
	}
	return "", true
}

// ErrNotChecked is returned for a connection whose address is not an IP
// address and port (a dialer hook that got something else).
var ErrNotChecked = errors.New("egress: the address to connect to is not an IP address and port")
