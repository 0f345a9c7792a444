package modproxy

import (
	"crypto/rand"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
)

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"short key", []Option{WithKey([]byte("short"))}, "HMAC key"},
		{"empty upstream", []Option{WithUpstream("")}, "upstream"},
		{"bad sumdb key", []Option{WithGoSumDB("sum.test+bad+key")}, "GOSUMDB"},
		{"sumdb with extra fields", []Option{WithGoSumDB("a b c")}, "GOSUMDB"},
		{"negative limit", []Option{WithLimits(-1, 0)}, "negative"},
		{"nil transport", []Option{WithTransport(nil)}, "transport"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(t.TempDir(), tt.opts...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want error with %q", err, tt.want)
			}
		})
	}
	t.Run("registered twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		p, err := New(t.TempDir(), WithRegisterer(reg))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(t.TempDir(), WithRegisterer(reg)); err == nil {
			t.Fatal("second proxy on one registry: no error")
		}
		p.Close() // unregisters
		if _, err := New(t.TempDir(), WithRegisterer(reg)); err != nil {
			t.Fatalf("after Close: %v", err)
		}
	})
}

func TestProxiedSumDBs(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "sum.example")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ gosumdb, upstream, want string }{
		{"sum.golang.org", "direct", "sum.golang.org"},
		{"sum.golang.org", "off", "sum.golang.org"},
		// Through the first upstream proxy, as the go command does.
		{"sum.golang.org", "https://proxy.golang.org,direct", "sum.golang.org https://proxy.golang.org/sumdb/sum.golang.org"},
		{"sum.golang.org", "http://127.0.0.1:9/x/|https://b", "sum.golang.org http://127.0.0.1:9/x/sumdb/sum.golang.org"},
		{"off", "https://proxy.golang.org", ""},
		{vkey, "direct", "sum.example"},
		{vkey + " http://127.0.0.1:1", "https://proxy.golang.org", "sum.example http://127.0.0.1:1"},
	}
	for _, tt := range tests {
		got, err := proxiedSumDBs(tt.gosumdb, tt.upstream)
		if err != nil {
			t.Errorf("%q: %v", tt.gosumdb, err)
			continue
		}
		if strings.Join(got, ";") != tt.want {
			t.Errorf("%q: %q, want %q", tt.gosumdb, got, tt.want)
		}
	}
}

func TestNetrc(t *testing.T) {
	p, err := New(t.TempDir(), WithKey(testKey))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Netrc("127.0.0.1:8443", "tenant", "b42")
	if err != nil {
		t.Fatal(err)
	}
	user, pass := p.Credentials("tenant", "b42")
	if want := "machine 127.0.0.1:8443 login " + user + " password " + pass + "\n"; string(got) != want || user != "b-b42" || len(pass) != 64 {
		t.Errorf("netrc %q, want %q", got, want)
	}
	if _, other := p.Credentials("tenant2", "b42"); other == pass {
		t.Error("same password for two scopes")
	}
	for _, bad := range [][3]string{
		{"", "tenant", "b42"},
		{"host with space", "tenant", "b42"},
		{"127.0.0.1:1", "Tenant", "b42"},
		{"127.0.0.1:1", "tenant", "b 42"},
		{"127.0.0.1:1", "tenant", ""},
	} {
		if _, err := p.Netrc(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Netrc%q: no error", bad)
		}
	}
}
