package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// privateFlags are the build command's flags for private sources. Secrets
// come from files (or - for stdin), never from flag values, which end up in
// shell history and ps.
func privateFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "git-token-file", Usage: "`FILE` holding the https token (or password) of --repo, sent as the password of --git-user; - reads stdin"},
		&cli.StringFlag{Name: "git-user", Usage: "the https user `NAME` sent with the token", DefaultText: "x-access-token"},
		&cli.StringFlag{Name: "git-ssh-key-file", Usage: "`FILE` holding an unencrypted ssh private key for an ssh --repo; - reads stdin"},
		&cli.StringFlag{Name: "git-known-hosts-file", Usage: "known_hosts `FILE` with the ssh host key of --repo's host (the server's known hosts also count)"},
		&cli.StringFlag{Name: "registry-auth-file", Usage: "docker config.json `FILE` whose auths (user and password, auth or identitytoken) are given for this build only; - reads stdin"},
		&cli.StringFlag{Name: "goprivate", Usage: "GOPRIVATE for this build: module path `GLOBS` fetched straight from their git hosts"},
		&cli.StringSliceFlag{Name: "secret-env-file", Usage: "secret environment of the build steps, `NAME=FILE` (repeatable): the file's content, never stored or shown"},
	}
}

// addPrivate adds the private-source flags' credentials to req. Its errors
// are usage errors; none quotes a secret.
func addPrivate(cCtx *cli.Context, req *buildv1.CreateImageRequest) error {
	stdinUsed := ""
	read := func(flag string) ([]byte, error) {
		name := cCtx.String(flag)
		if name == "" {
			return nil, nil
		}
		var b []byte
		var err error
		if name == "-" {
			if stdinUsed != "" {
				return nil, fmt.Errorf("--%s -: stdin is already read by --%s", flag, stdinUsed)
			}
			stdinUsed = flag
			b, err = io.ReadAll(io.LimitReader(cCtx.App.Reader, 1<<20))
		} else {
			b, err = os.ReadFile(name)
		}
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		return b, nil
	}
	tok, err := read("git-token-file")
	if err != nil {
		return err
	}
	key, err := read("git-ssh-key-file")
	if err != nil {
		return err
	}
	known, err := read("git-known-hosts-file")
	if err != nil {
		return err
	}
	if cCtx.IsSet("git-user") && len(tok) == 0 {
		return fmt.Errorf("--git-user needs --git-token-file")
	}
	if len(tok) > 0 || len(key) > 0 || len(known) > 0 {
		t := strings.TrimSpace(string(tok))
		if len(tok) > 0 && t == "" {
			return fmt.Errorf("--git-token-file %s is empty", cCtx.String("git-token-file"))
		}
		req.GitCredentials = &buildv1.GitCredentials{Password: t, SshPrivateKey: key, SshKnownHosts: known}
		if t != "" {
			req.GitCredentials.Username = cCtx.String("git-user")
		}
	}
	auth, err := read("registry-auth-file")
	if err != nil {
		return err
	}
	if auth != nil {
		if req.RegistryCredentials, err = registryCredentials(auth); err != nil {
			return fmt.Errorf("--registry-auth-file %s: %w", cCtx.String("registry-auth-file"), err)
		}
	}
	req.Goprivate = strings.TrimSpace(cCtx.String("goprivate"))
	for _, kv := range cCtx.StringSlice("secret-env-file") {
		name, file, ok := strings.Cut(kv, "=")
		if !ok || name == "" || file == "" {
			return fmt.Errorf("--secret-env-file %q: want NAME=FILE", kv)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--secret-env-file %s: %w", name, err)
		}
		if req.SecretEnv == nil {
			req.SecretEnv = map[string]string{}
		}
		if _, dup := req.SecretEnv[name]; dup {
			return fmt.Errorf("--secret-env-file %s: given twice", name)
		}
		req.SecretEnv[name] = strings.TrimRight(string(b), "\r\n")
	}
	return nil
}

// dockerConfig is the part of a docker config.json read here.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredsStore  string            `json:"credsStore"`
	CredHelpers map[string]string `json:"credHelpers"`
}

// registryCredentials reads the auths of a docker config.json. Credential
// helpers are not run: the build server cannot run them for the caller,
// and running them here would hand the server whatever they return for
// every registry.
func registryCredentials(b []byte) ([]*buildv1.RegistryCredentials, error) {
	var cfg dockerConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("not a docker config.json")
	}
	if len(cfg.Auths) == 0 {
		if cfg.CredsStore != "" || len(cfg.CredHelpers) > 0 {
			return nil, fmt.Errorf("has only credential helpers, which are not sent; give a config.json with auths")
		}
		return nil, fmt.Errorf("has no auths")
	}
	hosts := make([]string, 0, len(cfg.Auths))
	for h := range cfg.Auths {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var out []*buildv1.RegistryCredentials
	for _, h := range hosts {
		a := cfg.Auths[h]
		rc := &buildv1.RegistryCredentials{Registry: registryHost(h), Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				return nil, fmt.Errorf("auths[%q].auth is not base64 of user:password", h)
			}
			rc.Username, rc.Password = user, pass
		}
		if rc.IdentityToken != "" {
			rc.Password = "" // the token wins, as in docker
		}
		out = append(out, rc)
	}
	return out, nil
}

// registryHost turns a docker config key (a host, or a URL such as
// https://index.docker.io/v1/) into a registry host.
func registryHost(key string) string {
	h := strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	if h == "index.docker.io" {
		return "docker.io"
	}
	return h
}
