package server

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// FuzzParseRequest checks request validation on arbitrary field values: it
// never panics, a refusal is a *FieldError naming a field and a reason
// (and never the credentials of a git URL), and what it accepts is a
// fixed point: the accepted request, given back, is accepted as itself.
func FuzzParseRequest(f *testing.F) {
	// repo, commit, tag, dir, package, build flag, ldflags, env key and
	// value, label key and value, base image, timeout seconds and nanos,
	// allow insecure git.
	f.Add("https://github.com/micro/micro.git", "master", "registry.example/micro/micro:latest",
		"", "", "", "", "", "", "", "", "", int64(0), int32(0), false)
	f.Add("git://127.0.0.1:9418/sample.git", "", "127.0.0.1:5000/demo/sample",
		"services/app", "cmd/app", "-tags=netgo", "-s -w -X main.version=1", "CGO_ENABLED", "0",
		"team", "payments", "base.example/static@sha256:"+strings.Repeat("a", 64), int64(90), int32(0), false)
	f.Add(" file:///srv/repo.git ", strings.Repeat("0", 40), "app", "./a/../b/", "./x/./y", "-v", "",
		"", "", "org.example/k", "", " registry.example:5000/base:1 ", int64(5*3600), int32(1), true)
	f.Add("https://u:hunter2@example.com/a.git", "main..dev", "Not A/Valid:::tag", "/etc", "./...",
		"-o=/x", "-s\n-w", "GOOS", "windows", "org.opencontainers.image.revision", "x", "::", int64(-1), int32(0), false)
	f.Add("git@github.com:a/b.git", "--all", "registry.example/a@sha256:"+strings.Repeat("a", 64), "..",
		"-x", "netgo", "\x00", "1X", "y", "-bad", "", "", int64(0), int32(-5), false)
	f.Add("http://example.com/a.git", "refs/heads/x.lock", "localhost/x:y", "a b", "x/../-a",
		"--ldflags=-s", "", "A", "\x00", "k", "v", "ubuntu", int64(315576000001), int32(0), true)
	f.Fuzz(func(t *testing.T, repo, commit, tag, dir, pkg, flag, ldflags, envKey, envVal,
		labelKey, labelVal, base string, timeoutSec int64, timeoutNanos int32, insecure bool) {
		req := &buildv1.CreateImageRequest{
			GitRepo: repo, GitCommit: commit, ImageTag: tag, Dir: dir, Package: pkg,
			Ldflags: ldflags, BaseImage: base,
		}
		if flag != "" {
			req.BuildFlags = []string{flag}
		}
		if envKey != "" || envVal != "" {
			req.Env = map[string]string{envKey: envVal}
		}
		if labelKey != "" || labelVal != "" {
			req.Labels = map[string]string{labelKey: labelVal}
		}
		if timeoutSec != 0 || timeoutNanos != 0 {
			req.Timeout = &durationpb.Duration{Seconds: timeoutSec, Nanos: timeoutNanos}
		}
		cfg := Config{AllowInsecureGit: insecure, BaseImage: "base.example/static:1",
			DefaultTimeout: time.Minute, MaxTimeout: time.Hour}

		r, err := parseRequest(req, cfg)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is a %T, not a *FieldError", err, err)
			}
			if fe.Field == "" || fe.Reason == "" {
				t.Fatalf("field error %#v lacks its field or reason", fe)
			}
			if u, uerr := url.Parse(strings.TrimSpace(repo)); uerr == nil && u.User != nil {
				// An empty password ("//:@") is no secret, and its ":" is in
				// any message that names a URL scheme.
				if pw, hasPassword := u.User.Password(); hasPassword && pw != "" && strings.Contains(err.Error(), u.User.String()) {
					t.Fatalf("error %q shows the credentials of the git URL", err)
				}
			}
			return
		}
		if r.Timeout <= 0 || r.Timeout > cfg.MaxTimeout {
			t.Fatalf("accepted timeout %v is outside (0, %v]", r.Timeout, cfg.MaxTimeout)
		}
		first := r.proto()
		if validUTF8(repo, commit, tag, dir, pkg, flag, ldflags, envKey, envVal, labelKey, labelVal, base) {
			if _, err := proto.Marshal(first); err != nil {
				t.Fatalf("accepted request does not marshal: %v\n%v", err, first)
			}
		}
		again, err := parseRequest(first, cfg)
		if err != nil {
			t.Fatalf("accepted request %v is refused when given back: %v", first, err)
		}
		if second := again.proto(); !proto.Equal(first, second) {
			t.Fatalf("accepted request changes when given back:\nfirst  %v\nsecond %v", first, second)
		}
		if again.Binary != r.Binary {
			t.Fatalf("binary name changes when given back: %q, then %q", r.Binary, again.Binary)
		}
	})
}

func validUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// FuzzLogMasker feeds text, cut into chunks anywhere, as one step's output
// through an event log that knows one secret, then ends the build. The
// output is the text masked as one piece, as redactor.string masks it,
// and no chunk let out holds the secret.
func FuzzLogMasker(f *testing.F) {
	// text, secret, cuts: each byte of cuts is the length of the next
	// chunk modulo 16; the rest of the text is the last chunk.
	f.Add("login: user\npassword: hunter2-s3cret-pass\ndone\n", "hunter2-s3cret-pass", []byte{3, 15, 15, 1, 2})
	f.Add("aaaaaaaaa", "aaaa", []byte{1, 1, 1, 1, 1, 1, 1, 1})
	f.Add("abababab", "abab", []byte{3, 0, 3})
	f.Add("ends in s3cr", "s3cret-pass", []byte{5})
	f.Add("s3cret-pass"+"s3cret-pass", "s3cret-pass", []byte{10, 2})
	f.Add("no secret at all", "xyzzy", []byte{})
	f.Add("***abab", "***ab", []byte{5}) // a held tail taken from a mask just put in (fixed)
	f.Add("tok\xffen tok\xffen", "tok\xffen", []byte{2, 2, 2, 2})
	f.Fuzz(func(t *testing.T, text, secret string, cuts []byte) {
		if len(secret) < minSecretLen || strings.Contains(secret, mask) {
			t.Skip("secret too short to be masked, or it holds the mask")
		}
		// A secret that begins or ends with the mask's '*' can be spelled
		// by a mask and the text beside it (secret ***ab, masked output
		// *****ab), so for those only the output is checked, not that no
		// chunk shows the secret's text.
		bordersMask := strings.HasPrefix(secret, "*") || strings.HasSuffix(secret, "*")
		red := newRedactor([]string{secret})
		want := red.string(text)
		const vertex, stream = "v1", int32(2)
		l := newEventLog("b", red, 0)
		rest := text
		for _, c := range cuts {
			n := min(int(c)%16, len(rest))
			l.append(fuzzLogChunk(vertex, stream, rest[:n]))
			rest = rest[n:]
		}
		l.append(fuzzLogChunk(vertex, stream, rest))
		l.append(&buildv1.BuildEvent{Event: &buildv1.BuildEvent_State{State: &buildv1.StateChange{State: buildv1.BuildState_BUILD_STATE_SUCCEEDED}}})

		evs, _, _ := l.since(0)
		if len(evs) == 0 || evs[len(evs)-1].GetState() == nil {
			t.Fatalf("the state event is not the last event: %v", evs)
		}
		var got strings.Builder
		for i, e := range evs {
			if e.GetSeq() != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, e.GetSeq())
			}
			lg := e.GetLog()
			if lg == nil {
				if i != len(evs)-1 {
					t.Fatalf("event %d is not a log chunk: %v", i, e)
				}
				continue
			}
			if lg.GetVertex() != vertex || lg.GetStream() != stream {
				t.Fatalf("chunk %d is for %s/%d, want %s/%d", i, lg.GetVertex(), lg.GetStream(), vertex, stream)
			}
			if !bordersMask && strings.Contains(string(lg.GetData()), secret) {
				t.Fatalf("chunk %d holds the secret: %q", i, lg.GetData())
			}
			got.Write(lg.GetData())
		}
		if got.String() != want {
			t.Fatalf("output of %q cut by %v with secret %q:\n got %q\nwant %q", text, cuts, secret, got.String(), want)
		}
	})
}

func fuzzLogChunk(vertex string, stream int32, data string) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: &buildv1.LogChunk{
		Vertex: vertex, Stream: stream, Data: []byte(data)}}}
}

// FuzzParseCredentials checks the credential fields of a request on
// arbitrary values: it never panics, a refusal is a *FieldError that quotes
// no secret, and an accepted request's record holds none.
func FuzzParseCredentials(f *testing.F) {
	// git user and password, ssh key and known hosts, registry host, user
	// and password, module host, user and password, goprivate, secret env
	// key and value.
	f.Add("", "tok3n-value", []byte(nil), []byte(nil), "127.0.0.1:5001", "team", "regpass-value", "", "", "", "127.0.0.1", "", "")
	f.Add("bot", "pass word", []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n"), []byte("host ssh-ed25519 AAAA"),
		"registry.example/x", "", "p", "proxy.example:8443", "u", "modpass-value", "a b", "GOEXPERIMENT", "secretenv-value")
	f.Add("a:b", "", []byte("x"), []byte("# c\n"), "docker.io", "u", "", "Proxy.Example", "u", "p w", "*.corp", "HOME", "v")
	f.Fuzz(func(t *testing.T, gitUser, gitPass string, key, known []byte, regHost, regUser, regPass,
		modHost, modUser, modPass, goprivate, envKey, envVal string) {
		req := &buildv1.CreateImageRequest{
			GitRepo: "https://git.example/a.git", ImageTag: "registry.example/a:b", Goprivate: goprivate,
			GitCredentials: &buildv1.GitCredentials{Username: gitUser, Password: gitPass, SshPrivateKey: key, SshKnownHosts: known},
		}
		if regHost != "" || regUser != "" || regPass != "" {
			req.RegistryCredentials = []*buildv1.RegistryCredentials{{Registry: regHost, Username: regUser, Password: regPass}}
		}
		if modHost != "" || modUser != "" || modPass != "" {
			req.ModuleCredentials = []*buildv1.ModuleCredentials{{Host: modHost, Username: modUser, Password: modPass}}
		}
		if envKey != "" {
			req.SecretEnv = map[string]string{envKey: envVal}
		}
		secrets := []string{gitPass, regPass, modPass, envVal}
		r, err := parseRequest(req, Config{DefaultTimeout: time.Minute, MaxTimeout: time.Hour})
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
				t.Fatalf("error %v (%T) is not a *FieldError naming a field and a reason", err, err)
			}
			for _, s := range secrets {
				if len(s) >= 6 && strings.Contains(err.Error(), s) && !strings.Contains(quoteOthers(req), s) {
					t.Fatalf("error %q quotes the secret %q", err, s)
				}
			}
			return
		}
		rec, _ := proto.Marshal(r.proto())
		for _, s := range secrets {
			if len(s) >= 6 && strings.Contains(string(rec), s) && !strings.Contains(quoteOthers(req), s) {
				t.Fatalf("the record of an accepted request holds the secret %q", s)
			}
		}
		if r.proto().GetGitCredentials() != nil || r.proto().GetRegistryCredentials() != nil ||
			r.proto().GetModuleCredentials() != nil || r.proto().GetSecretEnv() != nil {
			t.Fatal("the record of an accepted request keeps credentials")
		}
	})
}

// quoteOthers is the request's fields that are not secret, so that a
// secret that equals one of them is not taken for a leak.
func quoteOthers(r *buildv1.CreateImageRequest) string {
	var names []string
	for _, rc := range r.GetRegistryCredentials() {
		names = append(names, rc.GetRegistry(), rc.GetUsername())
	}
	for _, mc := range r.GetModuleCredentials() {
		names = append(names, mc.GetHost(), mc.GetUsername())
	}
	for k := range r.GetSecretEnv() {
		names = append(names, k)
	}
	return strings.Join(append(names, r.GetGitRepo(), r.GetImageTag(), r.GetGoprivate(), r.GetGitCredentials().GetUsername()), "\n")
}
