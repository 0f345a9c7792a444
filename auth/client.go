package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"

	"google.golang.org/grpc/credentials"
)

// maxTokenFile bounds how much of a token file is read.
const maxTokenFile = 64 << 10

// TokenCredentials sends token with every call as "authorization: Bearer
// <token>". With requireTLS, gRPC refuses to send it on a connection
// without transport security; only tests and local development should
// pass false. Printing the credentials does not print the token.
func TokenCredentials(token string, requireTLS bool) credentials.PerRPCCredentials {
	return tokenCredentials{token: token, requireTLS: requireTLS}
}

// tokenCredentials implements credentials.PerRPCCredentials.
type tokenCredentials struct {
	token      string
	requireTLS bool
}

// GetRequestMetadata returns the authorization header.
func (c tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if c.token == "" {
		return nil, errors.New("auth: empty bearer token")
	}
	return map[string]string{"authorization": "Bearer " + c.token}, nil
}

// RequireTransportSecurity says whether the token may travel only over TLS.
func (c tokenCredentials) RequireTransportSecurity() bool { return c.requireTLS }

// String keeps the token out of anything that prints the credentials.
func (c tokenCredentials) String() string { return "auth.TokenCredentials(redacted)" }

// GoString keeps the token out of %#v.
func (c tokenCredentials) GoString() string { return c.String() }

// ReadTokenFile reads a bearer token from path, without the whitespace
// around it. Like ssh with private keys, it refuses a file that group or
// others may read or write (chmod 600 it), an empty file, and a file that
// holds more than one word.
func ReadTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("token file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s: permissions %04o are too open: group and others must have no access (chmod 600 %s)",
			path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(data) > maxTokenFile {
		return "", fmt.Errorf("token file %s: larger than %d bytes", path, maxTokenFile)
	}
	token := strings.TrimSpace(string(data))
	switch {
	case token == "":
		return "", fmt.Errorf("token file %s: empty", path)
	case strings.IndexFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "", fmt.Errorf("token file %s: holds more than one word; want only the token", path)
	}
	return token, nil
}
