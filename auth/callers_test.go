package auth_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/buildsvc/buildsvc/auth"
)

func TestHashToken(t *testing.T) {
	// FIPS 180-2 test vector.
	if got, want := auth.HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("HashToken(abc) = %s, want %s", got, want)
	}
}

func TestParseCallers(t *testing.T) {
	h1, h2 := auth.HashToken("one"), auth.HashToken("two")
	valid := `
callers:
  - name: ci-team-a
    tenant: team-a
    token_sha256: ` + h1 + `
  - name: deployer
    tenant: team-b
    cert_san_uri: spiffe://example.org/team-b/deployer
  - name: ops
    admin: true
    token_sha256: ` + h2 + `
    cert_subject_cn: ops.example.org
    cert_san_dns: ops.example.org
    cert_san_email: ops@example.org
  - name: ops.2
    admin: true
    tenant: ` + strings.Repeat("a", 63) + `
    cert_subject_cn: ops2.example.org
`
	c, err := auth.ParseCallers([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 4 {
		t.Errorf("Len = %d, want 4", c.Len())
	}
	path := writeFile(t, t.TempDir(), "callers.yaml", []byte(valid), 0o644)
	if c, err := auth.LoadCallers(path); err != nil || c.Len() != 4 {
		t.Errorf("LoadCallers: %v", err)
	}
	bad := writeFile(t, t.TempDir(), "bad.yaml", []byte("callers: []\n"), 0o644)
	if _, err := auth.LoadCallers(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadCallers of a bad file: %v, want an error naming it", err)
	}
	if _, err := auth.LoadCallers(filepath.Join(t.TempDir(), "absent.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCallers of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestParseCallersErrors(t *testing.T) {
	h1 := auth.HashToken("one")
	entry := func(lines ...string) string {
		return "callers:\n  - " + strings.Join(lines, "\n    ") + "\n"
	}
	tests := []struct {
		name string
		yaml string
		// want are substrings of the error; for an error in an entry,
		// index, entryName and field are the *CallerError's.
		want      []string
		index     int
		entryName string
		field     string
	}{
		{name: "empty file", yaml: "", want: []string{"empty"}},
		{name: "only a comment", yaml: "# nobody\n", want: []string{"empty"}},
		{name: "not YAML", yaml: "callers: [", want: []string{"parse"}},
		{name: "two documents", yaml: entry("name: a", "tenant: t", "token_sha256: "+h1) + "---\ncallers: []\n",
			want: []string{"more than one YAML document"}},
		{name: "top level is a list", yaml: "- name: a\n", want: []string{"line 1", `"callers"`}},
		{name: "unknown top-level key", yaml: "callers: []\nversion: 1\n", want: []string{"line 2", `unknown key "version"`}},
		{name: "no callers key", yaml: "{}\n", want: []string{`no "callers" key`}},
		{name: "callers twice", yaml: "callers: []\ncallers: []\n", want: []string{"appears twice"}},
		{name: "callers not a list", yaml: "callers: {name: a}\n", want: []string{"want a list"}},
		{name: "empty list", yaml: "callers: []\n", want: []string{"the list is empty"}},
		{name: "entry not a mapping", yaml: "callers:\n  - ci\n", want: []string{"callers[0]", "want a mapping"}, field: ""},

		{name: "unknown key in an entry", yaml: entry("name: ci", "tenant: t", "token: abc"),
			want: []string{`callers[0] "ci" (line 2): token: unknown key (line 4)`}, entryName: "ci", field: "token"},
		{name: "misspelt key", yaml: entry("name: ci", "tenant: t", "token_sha265: "+h1),
			want: []string{"token_sha265: unknown key"}, entryName: "ci", field: "token_sha265"},
		{name: "key twice", yaml: entry("name: ci", "tenant: t", "token_sha256: "+h1, "tenant: u"),
			want: []string{"tenant: appears twice"}, entryName: "ci", field: "tenant"},
		{name: "admin not a bool", yaml: entry("name: ci", "admin: maybe", "token_sha256: "+h1),
			want: []string{`callers[0] "ci"`, "bool"}, entryName: "ci"},
		{name: "no name", yaml: entry("tenant: t", "token_sha256: "+h1), want: []string{"name: required"}, field: "name"},
		{name: "bad name", yaml: entry("name: ci team", "tenant: t", "token_sha256: "+h1),
			want: []string{"not a valid name"}, entryName: "ci team", field: "name"},
		{name: "no tenant", yaml: entry("name: ci", "token_sha256: "+h1),
			want: []string{`callers[0] "ci"`, "tenant: required unless admin"}, entryName: "ci", field: "tenant"},
		{name: "admin false needs a tenant", yaml: entry("name: ci", "admin: false", "token_sha256: "+h1),
			want: []string{"tenant: required"}, entryName: "ci", field: "tenant"},
		{name: "tenant upper case", yaml: entry("name: ci", "tenant: Team-A", "token_sha256: "+h1),
			want: []string{`"Team-A" is not a valid tenant`}, entryName: "ci", field: "tenant"},
		{name: "tenant leading dash", yaml: entry("name: ci", "tenant: -a", "token_sha256: "+h1),
			want: []string{"not a valid tenant"}, entryName: "ci", field: "tenant"},
		{name: "tenant too long", yaml: entry("name: ci", "tenant: "+strings.Repeat("a", 64), "token_sha256: "+h1),
			want: []string{"not a valid tenant"}, entryName: "ci", field: "tenant"},
		{name: "tenant with underscore", yaml: entry("name: ci", "tenant: team_a", "token_sha256: "+h1),
			want: []string{"not a valid tenant"}, entryName: "ci", field: "tenant"},
		{name: "admin with a bad tenant", yaml: entry("name: ops", "admin: true", "tenant: A", "token_sha256: "+h1),
			want: []string{"not a valid tenant"}, entryName: "ops", field: "tenant"},
		{name: "hash not hex", yaml: entry("name: ci", "tenant: t", "token_sha256: "+strings.Repeat("z", 64)),
			want: []string{"token_sha256: not a SHA-256 in hex"}, entryName: "ci", field: "token_sha256"},
		{name: "hash too short", yaml: entry("name: ci", "tenant: t", "token_sha256: "+h1[:62]),
			want: []string{"token_sha256: not a SHA-256"}, entryName: "ci", field: "token_sha256"},
		{name: "hash too long", yaml: entry("name: ci", "tenant: t", "token_sha256: "+h1+"00"),
			want: []string{"token_sha256: not a SHA-256"}, entryName: "ci", field: "token_sha256"},
		{name: "no way to authenticate", yaml: entry("name: ci", "tenant: t"),
			want: []string{`callers[0] "ci"`, "no way to authenticate"}, entryName: "ci"},
		{name: "empty matchers are no way", yaml: entry("name: ci", "tenant: t", `cert_subject_cn: ""`, "token_sha256:"),
			want: []string{"no way to authenticate"}, entryName: "ci"},
		{name: "uri without scheme", yaml: entry("name: ci", "tenant: t", "cert_san_uri: example.org/ci"),
			want: []string{"cert_san_uri", "no scheme"}, entryName: "ci", field: "cert_san_uri"},
		{name: "bad uri", yaml: entry("name: ci", "tenant: t", `cert_san_uri: "spiffe://%zz"`),
			want: []string{"cert_san_uri"}, entryName: "ci", field: "cert_san_uri"},
		{name: "bad email", yaml: entry("name: ci", "tenant: t", "cert_san_email: ci.example.org"),
			want: []string{"cert_san_email", "not an email address"}, entryName: "ci", field: "cert_san_email"},
		{name: "bad dns", yaml: entry("name: ci", "tenant: t", "cert_san_dns: https://ci.example.org"),
			want: []string{"cert_san_dns", "not a DNS name"}, entryName: "ci", field: "cert_san_dns"},
		{name: "duplicate names", yaml: entry("name: ci", "tenant: t", "token_sha256: "+h1) +
			"  - name: ci\n    tenant: u\n    cert_subject_cn: ci\n",
			want: []string{`callers[1] "ci" (line 5): name: also the name of callers[0]`}, index: 1, entryName: "ci", field: "name"},
		{name: "duplicate hashes", yaml: entry("name: ci", "tenant: t", "token_sha256: "+h1) +
			"  - name: ci2\n    tenant: u\n    token_sha256: " + strings.ToUpper(h1) + "\n",
			want: []string{`callers[1] "ci2"`, `token_sha256: same token as callers[0] "ci"`}, index: 1, entryName: "ci2", field: "token_sha256"},
		{name: "duplicate matchers", yaml: entry("name: a", "tenant: t", "cert_san_dns: a.example.org") +
			"  - name: b\n    tenant: t\n    cert_san_dns: A.example.org\n",
			want: []string{`callers[1] "b"`, `same certificate matchers as callers[0] "a"`}, index: 1, entryName: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := auth.ParseCallers([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseCallers succeeded with %d callers, want an error", c.Len())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
			var ce *auth.CallerError
			isEntry := strings.Contains(err.Error(), "callers[")
			if errors.As(err, &ce) != isEntry {
				t.Fatalf("error %q: *CallerError %v, want %v", err, ce != nil, isEntry)
			}
			if ce != nil && errors.Unwrap(ce) == nil {
				t.Error("CallerError unwraps to nil")
			}
			if ce != nil && (ce.Index != tt.index || ce.Name != tt.entryName || ce.Field != tt.field) {
				t.Errorf("CallerError index %d name %q field %q, want %d %q %q",
					ce.Index, ce.Name, ce.Field, tt.index, tt.entryName, tt.field)
			}
		})
	}
}
