package modproxy_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/buildsvc/buildsvc/modproxy"
)

// A build's download step gets GOPROXY with its scope and a netrc file (as a secret
// mount); the proxy must be served over https, because the go command sends netrc
// credentials only there.
func ExampleProxy_Netrc() {
	dir, err := os.MkdirTemp("", "modproxy")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p, err := modproxy.New(dir, modproxy.WithLimits(20<<30, 30*24*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	// Serve p.Handler() with TLS on modproxy.internal:8443, then per build:
	netrc, err := p.Netrc("modproxy.internal:8443", "tenant-a", "01J9ZK")
	if err != nil {
		log.Fatal(err)
	}
	_ = netrc // mounted as /run/secrets/netrc
	fmt.Println("GOPROXY=https://modproxy.internal:8443/tenant-a")
	fmt.Println("NETRC=/run/secrets/netrc")
	// Output:
	// GOPROXY=https://modproxy.internal:8443/tenant-a
	// NETRC=/run/secrets/netrc
}
