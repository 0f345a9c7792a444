package egress

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// Every range of the default policy, IPv4 and IPv6 (and IPv4 inside IPv6:
// mapped, NAT64, 6to4), refused by default and with which allowance not.
func TestCheckAddresses(t *testing.T) {
	loopback := Allowance{Loopback: true}
	private := Allowance{Private: true}
	all := Allowance{Loopback: true, Private: true, AnyPort: true}
	tests := []struct {
		addr    string
		rule    Rule      // "" for allowed by default
		allowBy Allowance // an allowance that allows it; zero for none
	}{
		{"140.82.112.3", "", Allowance{}}, // a public IPv4 address
		{"2606:4700::6810:84e5", "", Allowance{}},
		{"8.8.8.8", "", Allowance{}},

		{"127.0.0.1", RuleLoopback, loopback},
		{"127.255.255.254", RuleLoopback, loopback},
		{"::1", RuleLoopback, loopback},
		{"::ffff:127.0.0.1", RuleLoopback, loopback}, // IPv4-mapped
		{"::ffff:7f00:2", RuleLoopback, loopback},
		{"64:ff9b::7f00:1", RuleLoopback, loopback}, // NAT64 of 127.0.0.1
		{"2002:7f00:1::1", RuleLoopback, loopback},  // 6to4 of 127.0.0.1

		{"169.254.169.254", RuleMetadata, Allowance{}},
		{"::ffff:169.254.169.254", RuleMetadata, Allowance{}},
		{"64:ff9b::a9fe:a9fe", RuleMetadata, Allowance{}},
		{"fd00:ec2::254", RuleMetadata, Allowance{}}, // inside fc00::/7, but never allowed
		{"100.100.100.200", RuleMetadata, Allowance{}},
		{"168.63.129.16", RuleMetadata, Allowance{}},
		{"169.254.0.1", RuleLinkLocal, Allowance{}},
		{"169.254.255.255", RuleLinkLocal, Allowance{}},
		{"fe80::1", RuleLinkLocal, Allowance{}},
		{"fe80::1%eth0", RuleLinkLocal, Allowance{}},
		{"febf:ffff::1", RuleLinkLocal, Allowance{}},

		{"10.0.0.1", RulePrivate, private},
		{"10.255.255.255", RulePrivate, private},
		{"172.16.0.1", RulePrivate, private},
		{"172.31.255.255", RulePrivate, private},
		{"192.168.1.1", RulePrivate, private},
		{"100.64.0.1", RulePrivate, private},
		{"100.127.255.255", RulePrivate, private},
		{"fc00::1", RulePrivate, private},
		{"fd12:3456::1", RulePrivate, private},
		{"::ffff:10.1.2.3", RulePrivate, private},
		{"::ffff:192.168.0.1", RulePrivate, private},
		{"64:ff9b::a01:203", RulePrivate, private},
		{"2002:c0a8:101::1", RulePrivate, private},

		{"0.0.0.0", RuleUnspecified, Allowance{}},
		{"0.1.2.3", RuleUnspecified, Allowance{}},
		{"::", RuleUnspecified, Allowance{}},
		{"::ffff:0.0.0.0", RuleUnspecified, Allowance{}},
		{"224.0.0.1", RuleMulticast, Allowance{}},
		{"239.255.255.250", RuleMulticast, Allowance{}},
		{"ff02::1", RuleMulticast, Allowance{}},
		{"255.255.255.255", RuleBroadcast, Allowance{}},
		{"::ffff:255.255.255.255", RuleBroadcast, Allowance{}},
		{"240.0.0.1", RuleReserved, Allowance{}},
		{"192.0.2.1", RuleReserved, Allowance{}},
		{"198.18.0.1", RuleReserved, Allowance{}},
		{"::7f00:1", RuleReserved, Allowance{}}, // IPv4-compatible
		{"2001::1", RuleReserved, Allowance{}},  // Teredo
		{"2001:db8::1", RuleReserved, Allowance{}},
	}
	for _, tt := range tests {
		addr := netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 443)
		err := For("https", Allowance{}).Check(addr)
		if tt.rule == "" {
			if err != nil {
				t.Errorf("%s: %v, want allowed", tt.addr, err)
			}
			continue
		}
		var r *Refused
		if !errors.As(err, &r) || r.Rule != tt.rule {
			t.Errorf("%s: %v, want refused by %s", tt.addr, err, tt.rule)
		}
		allowed := For("https", tt.allowBy).Check(addr)
		if tt.allowBy.Loopback || tt.allowBy.Private {
			if allowed != nil {
				t.Errorf("%s with %+v: %v, want allowed", tt.addr, tt.allowBy, allowed)
			}
		} else if allowed := For("https", all).Check(addr); allowed == nil {
			t.Errorf("%s with every allowance: allowed, want refused by %s", tt.addr, tt.rule)
		}
		// Each allowance allows only its own range.
		if tt.allowBy.Loopback && For("https", private).Check(addr) == nil {
			t.Errorf("%s: allowed by allow-private", tt.addr)
		}
		if tt.allowBy.Private && For("https", loopback).Check(addr) == nil {
			t.Errorf("%s: allowed by allow-loopback", tt.addr)
		}
	}
}

// Only the protocol's usual ports, unless allowed.
func TestCheckPorts(t *testing.T) {
	public := netip.MustParseAddr("140.82.112.3")
	tests := []struct {
		scheme string
		port   uint16
		allow  Allowance
		ok     bool
	}{
		{"https", 443, Allowance{}, true},
		{"https", 80, Allowance{}, true}, // a redirect to http or from it
		{"http", 443, Allowance{}, true},
		{"http", 80, Allowance{}, true},
		{"git", 9418, Allowance{}, true},
		{"ssh", 22, Allowance{}, true},
		{"https", 22, Allowance{}, false},
		{"https", 8443, Allowance{}, false},
		{"https", 6379, Allowance{}, false},
		{"git", 443, Allowance{}, false},
		{"git", 22, Allowance{}, false},
		{"ssh", 443, Allowance{}, false},
		{"ftp", 21, Allowance{}, false}, // no usual ports
		{"HTTPS", 443, Allowance{}, true},
		{"https", 8443, Allowance{Ports: []int{8443}}, true},
		{"https", 8444, Allowance{Ports: []int{8443}}, false},
		{"git", 19418, Allowance{Ports: []int{8443, 19418}}, true},
		{"https", 1, Allowance{AnyPort: true}, true},
		{"git", 65535, Allowance{AnyPort: true}, true},
	}
	for _, tt := range tests {
		err := For(tt.scheme, tt.allow).Check(netip.AddrPortFrom(public, tt.port))
		var r *Refused
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s port %d with %+v: %v, want allowed", tt.scheme, tt.port, tt.allow, err)
		case !tt.ok && (!errors.As(err, &r) || r.Rule != RulePort):
			t.Errorf("%s port %d with %+v: %v, want refused by the port rule", tt.scheme, tt.port, tt.allow, err)
		}
	}
	// An allowed address on a port that is not is refused for its port;
	// a refused address is refused for the address, whatever the port.
	var r *Refused
	err := For("git", Allowance{Loopback: true}).Check(netip.MustParseAddrPort("127.0.0.1:19418"))
	if !errors.As(err, &r) || r.Rule != RulePort || r.Error() != "the host policy refuses port 19418 (allowed: 9418)" {
		t.Errorf("loopback allowed, port not: %v", err)
	}
	err = For("git", Allowance{AnyPort: true}).Check(netip.MustParseAddrPort("127.0.0.1:9418"))
	if !errors.As(err, &r) || r.Rule != RuleLoopback || r.Error() != "the host policy refuses connections to a loopback address" {
		t.Errorf("any port, loopback not: %v", err)
	}
}

// The message names the rule and port, never the address (it may come
// from a DNS answer).
func TestRefusedMessageHasNoAddress(t *testing.T) {
	for _, a := range []string{"10.1.2.3:443", "[fd12::1]:443", "169.254.169.254:80", "127.0.0.1:8080"} {
		addr := netip.MustParseAddrPort(a)
		err := For("https", Allowance{}).Check(addr)
		if err == nil || strings.Contains(err.Error(), addr.Addr().String()) {
			t.Errorf("%s: %v", a, err)
		}
	}
}

func TestAllowanceAdd(t *testing.T) {
	got := Allowance{Loopback: true, Ports: []int{19418, 8443}}.Add(Allowance{Private: true, Ports: []int{8443, 22}})
	want := Allowance{Loopback: true, Private: true, Ports: []int{22, 8443, 19418}}
	if got.Loopback != want.Loopback || got.Private != want.Private || got.AnyPort || !slices.Equal(got.Ports, want.Ports) {
		t.Errorf("Add = %+v, want %+v", got, want)
	}
	if got := (Allowance{}).Add(Allowance{AnyPort: true}); !got.AnyPort || got.Loopback || got.Private {
		t.Errorf("Add any port = %+v", got)
	}
}

func TestParsePorts(t *testing.T) {
	for in, want := range map[string][]int{"": nil, " ": nil, "8443": {8443}, "8443, 19418": {8443, 19418}, "1,65535,": {1, 65535}} {
		got, err := ParsePorts(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParsePorts(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "65536", "-1", "https", "80 443", "8443;9418"} {
		if got, err := ParsePorts(in); err == nil {
			t.Errorf("ParsePorts(%q) = %v, want an error", in, got)
		}
	}
	if err := (Allowance{Ports: []int{0}}).Validate(); err == nil {
		t.Error("Validate: port 0 passes")
	}
	if err := (Allowance{Ports: []int{1, 65535}}).Validate(); err != nil {
		t.Error(err)
	}
}
