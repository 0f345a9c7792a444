package workers

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/buildsvc/buildsvc/buildkitd"
)

// DNSScheme starts an address that names a pool by a DNS name:
// dns://NAME:PORT is a worker at tcp://IP:PORT for every address NAME
// resolves to (a headless Kubernetes Service's pods), looked up again at
// every check.
const DNSScheme = "dns://"

// Parse reads a pool's addresses: a comma-separated list of buildkitd
// addresses (unix:///path, tcp://host:port), or one dns://NAME:PORT. Every
// worker gets tmpl's TLS settings. It returns the fixed endpoints, or, for
// a DNS name, a Resolve function for Config (using lookup, or the system
// resolver if nil).
func Parse(addrs string, tmpl buildkitd.Endpoint, lookup func(ctx context.Context, host string) ([]string, error)) ([]buildkitd.Endpoint, func(context.Context) ([]buildkitd.Endpoint, error), error) {
	var es []buildkitd.Endpoint
	for a := range strings.SplitSeq(addrs, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if rest, ok := strings.CutPrefix(a, DNSScheme); ok {
			if strings.Contains(addrs, ",") {
				return nil, nil, fmt.Errorf("buildkitd address %q: a dns:// address names the whole pool; list no others with it", a)
			}
			host, port, err := net.SplitHostPort(rest)
			if err != nil || host == "" || port == "" {
				return nil, nil, fmt.Errorf("buildkitd address %q: want dns://NAME:PORT", a)
			}
			if lookup == nil {
				lookup = net.DefaultResolver.LookupHost
			}
			return nil, func(ctx context.Context) ([]buildkitd.Endpoint, error) {
				ips, err := lookup(ctx, host)
				if err != nil {
					return nil, fmt.Errorf("resolve the buildkitd pool %s: %w", host, err)
				}
				slices.Sort(ips)
				out := make([]buildkitd.Endpoint, 0, len(ips))
				for _, ip := range slices.Compact(ips) {
					e := tmpl
					e.Address = "tcp://" + net.JoinHostPort(ip, port)
					if e.ServerName == "" {
						// The certificate names the Service, not the
						// pod's address.
						e.ServerName = host
					}
					out = append(out, e)
				}
				return out, nil
			}, nil
		}
		e := tmpl
		e.Address = a
		if strings.HasPrefix(a, "unix://") {
			e.CACert, e.Cert, e.Key, e.ServerName = "", "", "", ""
		}
		if err := e.Validate(); err != nil {
			return nil, nil, err
		}
		if slices.ContainsFunc(es, func(o buildkitd.Endpoint) bool { return o.Address == a }) {
			return nil, nil, fmt.Errorf("buildkitd address %q is listed twice", a)
		}
		es = append(es, e)
	}
	if len(es) == 0 {
		return nil, nil, fmt.Errorf("no buildkitd address in %q", addrs)
	}
	return es, nil, nil
}
