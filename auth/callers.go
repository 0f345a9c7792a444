package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Patterns of the names in a callers file.
var (
	tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// The keys of one entry of a callers file.
const (
	keyName          = "name"
	keyTenant        = "tenant"
	keyAdmin         = "admin"
	keyTokenSHA256   = "token_sha256"
	keyCertSubjectCN = "cert_subject_cn"
	keyCertSANDNS    = "cert_san_dns"
	keyCertSANURI    = "cert_san_uri"
	keyCertSANEmail  = "cert_san_email"
)

// entryKeys are the keys an entry may have.
var entryKeys = []string{keyName, keyTenant, keyAdmin, keyTokenSHA256,
	keyCertSubjectCN, keyCertSANDNS, keyCertSANURI, keyCertSANEmail}

// entry is one entry of a callers file as written.
type entry struct {
	Name          string `yaml:"name"`
	Tenant        string `yaml:"tenant"`
	Admin         bool   `yaml:"admin"`
	TokenSHA256   string `yaml:"token_sha256"`
	CertSubjectCN string `yaml:"cert_subject_cn"`
	CertSANDNS    string `yaml:"cert_san_dns"`
	CertSANURI    string `yaml:"cert_san_uri"`
	CertSANEmail  string `yaml:"cert_san_email"`
}

// CallerError is an error in one entry of a callers file.
type CallerError struct {
	// Index is the entry's position in the callers list, from 0.
	Index int
	// Line is the entry's line in the file.
	Line int
	// Name is the entry's name, empty if it has none.
	Name string
	// Field is the key at fault, empty when the entry as a whole is.
	Field string
	// Err says what is wrong.
	Err error
}

// Error implements error: `callers[1] "ci" (line 7): token_sha256: ...`.
func (e *CallerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "callers[%d]", e.Index)
	if e.Name != "" {
		fmt.Fprintf(&b, " %q", e.Name)
	}
	fmt.Fprintf(&b, " (line %d)", e.Line)
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Err.Error())
	return b.String()
}

// Unwrap returns Err.
func (e *CallerError) Unwrap() error { return e.Err }

// caller is one parsed entry.
type caller struct {
	id        Identity // without Method
	tokenHash []byte   // 32 bytes, nil without a token
	cn        string
	dns       string
	uri       string // normalised by url.Parse
	email     string
}

// hasCert says whether the caller may authenticate with a certificate.
func (c *caller) hasCert() bool {
	return c.cn != "" || c.dns != "" || c.uri != "" || c.email != ""
}

// matchesCert says whether leaf satisfies every certificate matcher of c.
// Names are compared literally (a wildcard in a SAN matches only itself);
// DNS names ignore case.
func (c *caller) matchesCert(leaf *x509.Certificate) bool {
	if !c.hasCert() {
		return false
	}
	if c.cn != "" && leaf.Subject.CommonName != c.cn {
		return false
	}
	if c.dns != "" && !slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return strings.EqualFold(n, c.dns) }) {
		return false
	}
	if c.uri != "" && !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == c.uri }) {
		return false
	}
	if c.email != "" && !slices.Contains(leaf.EmailAddresses, c.email) {
		return false
	}
	return true
}

// Callers is the parsed callers file: who may call and how each proves it.
// It is immutable; make one with LoadCallers or ParseCallers.
type Callers struct {
	list []caller
}

// Len is the number of callers.
func (c *Callers) Len() int { return len(c.list) }

// HashToken returns the hex SHA-256 of token, the form token_sha256 takes
// in a callers file. Tokens are random, high-entropy strings, so a plain
// hash is enough: there is nothing to guess that a slow hash would protect.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// byToken returns the index of the caller whose token is token. It
// compares the token's hash with every caller's in constant time and
// scans them all, so the time taken does not say which one matched.
func (c *Callers) byToken(token string) (int, bool) {
	sum := sha256.Sum256([]byte(token))
	found, idx := 0, 0
	for i := range c.list {
		eq := subtle.ConstantTimeCompare(sum[:], c.list[i].tokenHash)
		idx = subtle.ConstantTimeSelect(eq, i, idx)
		found |= eq
	}
	return idx, found == 1
}

// byCert returns the indexes of the callers leaf matches.
func (c *Callers) byCert(leaf *x509.Certificate) []int {
	var idx []int
	for i := range c.list {
		if c.list[i].matchesCert(leaf) {
			idx = append(idx, i)
		}
	}
	return idx
}

// LoadCallers reads and parses the callers file at path (see ParseCallers).
func LoadCallers(path string) (*Callers, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("callers file: %w", err)
	}
	c, err := ParseCallers(data)
	if err != nil {
		return nil, fmt.Errorf("callers file %s: %w", path, err)
	}
	return c, nil
}

// ParseCallers parses a callers file:
//
//	callers:
//	  - name: ci-team-a          # required, unique; [A-Za-z0-9][A-Za-z0-9._-]{0,127}
//	    tenant: team-a           # required unless admin; [a-z0-9][a-z0-9-]{0,62}
//	    token_sha256: 9f86d0...  # hex SHA-256 of the bearer token (HashToken)
//	  - name: deployer
//	    tenant: team-b
//	    cert_san_uri: spiffe://example.org/team-b/deployer
//	  - name: ops
//	    admin: true
//	    cert_subject_cn: ops.example.org
//	    cert_san_dns: ops.example.org
//	    cert_san_email: ops@example.org
//
// Every entry needs a token hash or at least one certificate matcher
// (cert_subject_cn, cert_san_dns, cert_san_uri, cert_san_email), or both.
// A client certificate matches an entry when it satisfies all of the
// entry's matchers. Unknown keys, duplicate names, token hashes or matcher
// sets are errors; errors in an entry are a *CallerError.
func ParseCallers(data []byte) (*Callers, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no callers: the file is empty")
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	entries, err := callerNodes(&root)
	if err != nil {
		return nil, err
	}
	c := &Callers{}
	names := map[string]int{}
	hashes := map[string]int{}
	matchers := map[string]int{}
	for i, n := range entries {
		cl, err := parseEntry(i, n)
		if err != nil {
			return nil, err
		}
		fail := func(field, format string, args ...any) error {
			return &CallerError{Index: i, Line: n.Line, Name: cl.id.Name, Field: field, Err: fmt.Errorf(format, args...)}
		}
		if j, dup := names[cl.id.Name]; dup {
			return nil, fail(keyName, "also the name of callers[%d]", j)
		}
		names[cl.id.Name] = i
		if cl.tokenHash != nil {
			if j, dup := hashes[string(cl.tokenHash)]; dup {
				return nil, fail(keyTokenSHA256, "same token as callers[%d] %q", j, c.list[j].id.Name)
			}
			hashes[string(cl.tokenHash)] = i
		}
		if cl.hasCert() {
			key := strings.Join([]string{cl.cn, strings.ToLower(cl.dns), cl.uri, cl.email}, "\x00")
			if j, dup := matchers[key]; dup {
				return nil, fail("", "same certificate matchers as callers[%d] %q", j, c.list[j].id.Name)
			}
			matchers[key] = i
		}
		c.list = append(c.list, cl)
	}
	return c, nil
}

// callerNodes checks the file's top level (a mapping with only "callers",
// a non-empty list) and returns the list's entries.
func callerNodes(root *yaml.Node) ([]*yaml.Node, error) {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping with the key \"callers\"", doc.Line)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k := doc.Content[i]
		if k.Value != "callers" {
			return nil, fmt.Errorf("line %d: unknown key %q (the file has only \"callers\")", k.Line, k.Value)
		}
		if list != nil {
			return nil, fmt.Errorf("line %d: \"callers\" appears twice", k.Line)
		}
		list = doc.Content[i+1]
	}
	if list == nil {
		return nil, errors.New("no \"callers\" key")
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: callers: want a list", list.Line)
	}
	if len(list.Content) == 0 {
		return nil, fmt.Errorf("line %d: callers: the list is empty", list.Line)
	}
	return list.Content, nil
}

// parseEntry checks and converts the i-th entry, n.
func parseEntry(i int, n *yaml.Node) (caller, error) {
	cerr := &CallerError{Index: i, Line: n.Line}
	fail := func(field, format string, args ...any) error {
		cerr.Field, cerr.Err = field, fmt.Errorf(format, args...)
		return cerr
	}
	if n.Kind != yaml.MappingNode {
		return caller{}, fail("", "want a mapping")
	}
	// Find the name first, so that every error can say which entry it is.
	for j := 0; j+1 < len(n.Content); j += 2 {
		if k, v := n.Content[j], n.Content[j+1]; k.Value == keyName && v.Kind == yaml.ScalarNode {
			cerr.Name = v.Value
		}
	}
	seen := map[string]bool{}
	for j := 0; j+1 < len(n.Content); j += 2 {
		k := n.Content[j]
		if !slices.Contains(entryKeys, k.Value) {
			return caller{}, fail(k.Value, "unknown key (line %d)", k.Line)
		}
		if seen[k.Value] {
			return caller{}, fail(k.Value, "appears twice (line %d)", k.Line)
		}
		seen[k.Value] = true
	}
	var e entry
	if err := n.Decode(&e); err != nil {
		cerr.Err = err
		return caller{}, cerr
	}

	cl := caller{id: Identity{Name: e.Name, Tenant: e.Tenant, Admin: e.Admin}}
	switch {
	case e.Name == "":
		return caller{}, fail(keyName, "required")
	case !namePattern.MatchString(e.Name):
		return caller{}, fail(keyName, "%q is not a valid name: letters, digits, '.', '_' and '-', at most 128, starting with a letter or digit", e.Name)
	}
	switch {
	case e.Tenant == "" && !e.Admin:
		return caller{}, fail(keyTenant, "required unless admin is true")
	case e.Tenant != "" && !tenantPattern.MatchString(e.Tenant):
		return caller{}, fail(keyTenant, "%q is not a valid tenant: lower-case letters, digits and '-', at most 63, starting with a letter or digit", e.Tenant)
	}
	if e.TokenSHA256 != "" {
		h, err := hex.DecodeString(e.TokenSHA256)
		if err != nil || len(h) != sha256.Size {
			return caller{}, fail(keyTokenSHA256, "not a SHA-256 in hex (64 hex digits)")
		}
		cl.tokenHash = h
	}
	cl.cn = e.CertSubjectCN
	if e.CertSANDNS != "" {
		if strings.ContainsAny(e.CertSANDNS, " \t/@:") || strings.HasPrefix(e.CertSANDNS, ".") {
			return caller{}, fail(keyCertSANDNS, "%q is not a DNS name", e.CertSANDNS)
		}
		cl.dns = e.CertSANDNS
	}
	if e.CertSANURI != "" {
		u, err := url.Parse(e.CertSANURI)
		if err != nil {
			return caller{}, fail(keyCertSANURI, "%w", err)
		}
		if u.Scheme == "" {
			return caller{}, fail(keyCertSANURI, "%q has no scheme", e.CertSANURI)
		}
		cl.uri = u.String()
	}
	if e.CertSANEmail != "" {
		if at := strings.LastIndex(e.CertSANEmail, "@"); at <= 0 || at == len(e.CertSANEmail)-1 {
			return caller{}, fail(keyCertSANEmail, "%q is not an email address", e.CertSANEmail)
		}
		cl.email = e.CertSANEmail
	}
	if cl.tokenHash == nil && !cl.hasCert() {
		return caller{}, fail("", "no way to authenticate: set %s or a certificate matcher (%s, %s, %s, %s)",
			keyTokenSHA256, keyCertSubjectCN, keyCertSANDNS, keyCertSANURI, keyCertSANEmail)
	}
	return cl, nil
}
