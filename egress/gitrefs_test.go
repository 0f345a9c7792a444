package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// secret is text a remote sends that no error may repeat.
const secret = "internal-admin-panel-Zq7"

const (
	shaMain = "1111111111111111111111111111111111111111"
	shaTag  = "2222222222222222222222222222222222222222"
	shaPeel = "3333333333333333333333333333333333333333"
)

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// advertisement is an upload-pack ref advertisement: HEAD → main, an
// annotated tag and its peeled commit.
func advertisement() string {
	return pkt(shaMain+" HEAD\x00symref=HEAD:refs/heads/main agent=git/2.39\n") +
		pkt(shaMain+" refs/heads/main\n") +
		pkt(shaTag+" refs/tags/v1\n") +
		pkt(shaPeel+" refs/tags/v1^{}\n") + "0000"
}

// fakeGitDaemon serves git:// on 127.0.0.1: it reads the request line and
// answers with answer(path).
func fakeGitDaemon(t *testing.T, answer func(path string) string) (port int, requests chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	requests = make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				var n int
				if _, err := fmt.Fscanf(r, "%04x", &n); err != nil || n < 4 {
					return
				}
				line := make([]byte, n-4)
				if _, err := io.ReadFull(r, line); err != nil {
					return
				}
				requests <- string(line)
				path := strings.TrimPrefix(strings.SplitN(string(line), "\x00", 2)[0], "git-upload-pack ")
				a := answer(path)
				if a == "" {
					return // close at once
				}
				io.WriteString(c, a)
				io.Copy(io.Discard, r) // until the client's flush and close
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, requests
}

var local = Allowance{Loopback: true, AnyPort: true}

func refsByName(refs []*plumbing.Reference) map[string]string {
	m := map[string]string{}
	for _, r := range refs {
		if r.Type() == plumbing.SymbolicReference {
			m[r.Name().String()] = "-> " + r.Target().String()
		} else {
			m[r.Name().String()] = r.Hash().String()
		}
	}
	return m
}

func checkRefs(t *testing.T, refs []*plumbing.Reference) {
	t.Helper()
	got := refsByName(refs)
	want := map[string]string{"HEAD": "-> refs/heads/main", "refs/heads/main": shaMain, "refs/tags/v1": shaTag, "refs/tags/v1^{}": shaPeel}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("refs = %v, want %v", got, want)
	}
}

func TestListRefsGit(t *testing.T) {
	port, requests := fakeGitDaemon(t, func(path string) string {
		switch path {
		case "/repo.git":
			return advertisement()
		case "/empty.git":
			return "0000"
		case "/secret.git":
			return pkt("ERR access denied or repository not exported: " + secret + "\n")
		case "/garbage.git":
			return secret + " is listening here\n"
		case "/huge.git":
			return pkt(shaMain+" HEAD\x00agent=x\n") + strings.Repeat(pkt(shaMain+" refs/heads/"+strings.Repeat("b", 900)+"\n"), 80000)
		}
		return "" // close at once
	})
	url := func(name string) string { return fmt.Sprintf("git://127.0.0.1:%d/%s", port, name) }

	refs, err := ListRefs(t.Context(), url("repo.git"), local, Auth{})
	if err != nil {
		t.Fatal(err)
	}
	checkRefs(t, refs)
	if req := <-requests; req != fmt.Sprintf("git-upload-pack /repo.git\x00host=127.0.0.1:%d\x00", port) {
		t.Errorf("request %q", req)
	}
	refs, err = ListRefs(t.Context(), url("empty.git"), local, Auth{})
	if err != nil || len(refs) != 0 {
		t.Errorf("empty repository: %v, %v; want no refs", refs, err)
	}
	for name, want := range map[string]Kind{"secret.git": KindNotFound, "garbage.git": KindProtocol, "closes.git": KindUnreachable, "huge.git": KindTooLarge} {
		_, err := ListRefs(t.Context(), url(name), local, Auth{})
		checkFailure(t, name, err, want)
	}
}

// checkFailure checks err is a *Failure of kind want whose message has
// nothing of what the remote sent.
func checkFailure(t *testing.T, what string, err error, want Kind) {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) || f.Kind != want {
		t.Errorf("%s: %v (%#v), want a failure of kind %q", what, err, err, kindText[want])
		return
	}
	if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "127.0.0.1") || msg == "" {
		t.Errorf("%s: message %q repeats the remote or the address", what, msg)
	}
}

func TestListRefsHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("service") != "git-upload-pack" {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/repo.git/info/refs":
			w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			io.WriteString(w, pkt("# service=git-upload-pack\n")+"0000"+advertisement())
		case "/empty.git/info/refs":
			w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			io.WriteString(w, pkt("# service=git-upload-pack\n")+"0000"+"0000")
		case "/moved.git/info/refs":
			http.Redirect(w, r, "/repo.git/info/refs?service=git-upload-pack", http.StatusFound)
		case "/private.git/info/refs":
			http.Error(w, "login at https://sso.internal/"+secret, http.StatusUnauthorized)
		case "/forbidden.git/info/refs":
			http.Error(w, secret, http.StatusForbidden)
		case "/broken.git/info/refs":
			http.Error(w, "stack trace: "+secret, http.StatusInternalServerError)
		case "/html.git/info/refs":
			io.WriteString(w, "<html>"+secret+"</html>")
		default:
			http.Error(w, "no repository "+secret, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)

	for _, name := range []string{"repo.git", "moved.git"} {
		refs, err := ListRefs(t.Context(), srv.URL+"/"+name, local, Auth{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkRefs(t, refs)
	}
	if refs, err := ListRefs(t.Context(), srv.URL+"/empty.git", local, Auth{}); err != nil || len(refs) != 0 {
		t.Errorf("empty repository: %v, %v; want no refs", refs, err)
	}
	for name, want := range map[string]Kind{"private.git": KindAuth, "forbidden.git": KindDenied, "missing.git": KindNotFound,
		"broken.git": KindProtocol, "html.git": KindProtocol} {
		_, err := ListRefs(t.Context(), srv.URL+"/"+name, local, Auth{})
		checkFailure(t, name, err, want)
	}
	var f *Failure
	if _, err := ListRefs(t.Context(), srv.URL+"/broken.git", local, Auth{}); !errors.As(err, &f) || f.HTTPStatus != 500 ||
		err.Error() != "protocol error (HTTP status 500)" {
		t.Errorf("broken: %v", err)
	}
}

// A redirect is dialled through the same hook: one to a port the policy
// refuses is refused, and the target sees no connection.
func TestListRefsRedirectIsChecked(t *testing.T) {
	target := listen(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("http://127.0.0.1:%d/x.git/info/refs?service=git-upload-pack", target.port()), http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	_, err := ListRefs(t.Context(), srv.URL+"/x.git", Allowance{Loopback: true, Ports: []int{port}}, Auth{})
	checkFailure(t, "redirect", err, KindRefused)
	var r *Refused
	if !errors.As(err, &r) || r.Rule != RulePort || r.Addr.Port() != uint16(target.port()) {
		t.Errorf("redirect: %v, want the target's port refused", err)
	}
	target.assertNoConnection(t)
}

// Without the allowance nothing on loopback is dialled, by address or name.
func TestListRefsRefusesLoopback(t *testing.T) {
	l := listen(t)
	for _, url := range []string{
		fmt.Sprintf("git://localhost:%d/x.git", l.port()),
		fmt.Sprintf("git://127.0.0.1:%d/x.git", l.port()),
		fmt.Sprintf("https://127.0.0.1:%d/x.git", l.port()),
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/x.git", l.port()),
	} {
		_, err := ListRefs(t.Context(), url, Allowance{AnyPort: true}, Auth{})
		checkFailure(t, url, err, KindRefused)
		var r *Refused
		if !errors.As(err, &r) || r.Rule != RuleLoopback {
			t.Errorf("%s: %v, want refused as loopback", url, err)
		}
	}
	l.assertNoConnection(t)
}

func TestListRefsFailures(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	_, err = ListRefs(t.Context(), "git://"+closed+"/x.git", local, Auth{})
	checkFailure(t, "closed port", err, KindConnRefused)

	// A server that accepts and never answers: the context's deadline.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hang.Close() })
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = ListRefs(ctx, "git://"+hang.Addr().String()+"/x.git", local, Auth{})
	checkFailure(t, "hanging git server", err, KindTimeout)
	ctx, cancel = context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = ListRefs(ctx, "http://"+hang.Addr().String()+"/x.git", local, Auth{})
	checkFailure(t, "hanging http server", err, KindTimeout)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the timeouts took %s", d)
	}
	// Cancelled while waiting for the answer.
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = ListRefs(ctx, "git://"+hang.Addr().String()+"/x.git", local, Auth{})
	checkFailure(t, "cancelled", err, KindCanceled)

	for _, url := range []string{"file:///tmp/x.git", "/tmp/x.git", "ftp://127.0.0.1/x.git"} {
		_, err := ListRefs(t.Context(), url, local, Auth{})
		checkFailure(t, url, err, KindUnsupported)
	}
}
