package deploy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// certFiles are the files scripts/buildkitd-certs.sh writes, with their modes.
var certFiles = map[string]os.FileMode{
	"ca.crt": 0o644, "ca.key": 0o600,
	"buildkitd.crt": 0o644, "buildkitd.key": 0o600,
	"client.crt": 0o644, "client.key": 0o600,
}

const (
	serverAuth = x509.ExtKeyUsageServerAuth
	clientAuth = x509.ExtKeyUsageClientAuth
)

// runCertScript runs scripts/buildkitd-certs.sh with args (DIR last, or
// dir appended) and no BUILDKITD_ env of the caller's, and returns dir.
func runCertScript(t *testing.T, dir string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: scripts/buildkitd-certs.sh needs it")
	}
	cmd := exec.Command("bash", append(append([]string{"../scripts/buildkitd-certs.sh"}, args...), dir)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDKITD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/buildkitd-certs.sh %v: %v\n%s", args, err, out)
	}
	return dir
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

// verifyLeaf checks that leaf chains to ca for usage (and, if name is set,
// is valid for it), the way a Go TLS peer checks it.
func verifyLeaf(t *testing.T, ca, leaf *x509.Certificate, name string, usage x509.ExtKeyUsage) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Errorf("certificate %q (for %q): %v", leaf.Subject.CommonName, name, err)
	}
}

// snapshot is the contents of every file of dir.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name := range certFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// The script makes a CA and two certificates it signed: buildkitd's for
// the default names (buildkitd, localhost, 127.0.0.1) or the ones asked
// for, and a client certificate; private keys 0600. Run again it keeps
// what still fits and makes only what does not.
func TestBuildkitdCertsScript(t *testing.T) {
	dir := runCertScript(t, filepath.Join(t.TempDir(), "certs"))
	for name, mode := range certFiles {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", name, st.Mode().Perm(), mode)
		}
	}
	checkPairs(t, dir)
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	if !ca.IsCA {
		t.Error("ca.crt is not a CA")
	}
	srv := readCert(t, filepath.Join(dir, "buildkitd.crt"))
	for _, name := range []string{"buildkitd", "localhost", "127.0.0.1"} {
		verifyLeaf(t, ca, srv, name, serverAuth)
	}
	if got := ipStrings(srv.IPAddresses); !slices.Equal(got, []string{"127.0.0.1"}) || !slices.Equal(srv.DNSNames, []string{"buildkitd", "localhost"}) {
		t.Errorf("buildkitd.crt names %v %v, want [buildkitd localhost] [127.0.0.1]", srv.DNSNames, got)
	}
	cl := readCert(t, filepath.Join(dir, "client.crt"))
	verifyLeaf(t, ca, cl, "", clientAuth)
	if cl.Subject.CommonName != "buildsvc-server" {
		t.Errorf("client.crt CN %q, want buildsvc-server", cl.Subject.CommonName)
	}
	for _, c := range []*x509.Certificate{srv, cl} {
		if c.IsCA {
			t.Errorf("%s is a CA", c.Subject.CommonName)
		}
	}

	// Again: nothing changes.
	before := snapshot(t, dir)
	runCertScript(t, dir)
	for name, b := range snapshot(t, dir) {
		if !bytes.Equal(b, before[name]) {
			t.Errorf("a second run changed %s", name)
		}
	}

	// Other names: a new buildkitd certificate from the same CA; the rest stays.
	runCertScript(t, dir, "--san", "bk.example", "--san", "10.0.0.7")
	after := snapshot(t, dir)
	for name, b := range after {
		if changed := !bytes.Equal(b, before[name]); changed != strings.HasPrefix(name, "buildkitd.") {
			t.Errorf("%s changed: %v, want it changed only for buildkitd.*", name, changed)
		}
	}
	srv = readCert(t, filepath.Join(dir, "buildkitd.crt"))
	verifyLeaf(t, ca, srv, "bk.example", serverAuth)
	verifyLeaf(t, ca, srv, "10.0.0.7", serverAuth)
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(ca), DNSName: "buildkitd", KeyUsages: []x509.ExtKeyUsage{serverAuth}}); err == nil {
		t.Error("buildkitd.crt is still valid for buildkitd after --san bk.example --san 10.0.0.7")
	}

	// A client certificate of another CA, or not of its key, is made again.
	other := runCertScript(t, filepath.Join(t.TempDir(), "other"))
	for _, bad := range []struct{ what, crt, key string }{
		{"of another CA", filepath.Join(other, "client.crt"), filepath.Join(other, "client.key")},
		{"not of its key", filepath.Join(dir, "client.crt"), filepath.Join(other, "client.key")},
	} {
		for src, dst := range map[string]string{bad.crt: "client.crt", bad.key: "client.key"} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, dst+".new"), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"client.crt", "client.key"} {
			if err := os.Rename(filepath.Join(dir, f+".new"), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		runCertScript(t, dir, "--san", "bk.example", "--san", "10.0.0.7")
		checkPairs(t, dir)
		cl2 := readCert(t, filepath.Join(dir, "client.crt"))
		verifyLeaf(t, ca, cl2, "", clientAuth)
		if cl2.Subject.CommonName != "buildsvc-server" {
			t.Errorf("client certificate %s: made again with CN %q", bad.what, cl2.Subject.CommonName)
		}
	}

	// A new CA makes both certificates again.
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	runCertScript(t, dir)
	ca2 := readCert(t, filepath.Join(dir, "ca.crt"))
	if ca2.Equal(ca) {
		t.Fatal("ca.crt kept without its key")
	}
	verifyLeaf(t, ca2, readCert(t, filepath.Join(dir, "buildkitd.crt")), "buildkitd", serverAuth)
	verifyLeaf(t, ca2, readCert(t, filepath.Join(dir, "client.crt")), "", clientAuth)
}

// checkPairs fails unless each key of dir is its certificate's.
func checkPairs(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"ca", "buildkitd", "client"} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")); err != nil {
			t.Errorf("%s.crt and %s.key: %v", name, name, err)
		}
	}
}

func pool(ca *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return p
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}
