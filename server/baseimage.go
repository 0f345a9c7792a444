package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/buildsvc/buildsvc/buildkitd"
	"github.com/buildsvc/buildsvc/credentials"
	"github.com/buildsvc/buildsvc/egress"
)

// notFoundField is a request field that names something that does not
// exist: NotFound, naming the field.
type notFoundField struct{ field, reason string }

func (e *notFoundField) Error() string { return e.field + ": " + e.reason }

// GRPCStatus gives the error its code.
func (e *notFoundField) GRPCStatus() *status.Status {
	return status.New(codes.NotFound, e.Error())
}

// baseUnchecked is a base image whose registry could not be asked (down,
// refusing the credentials): the build finds out what is wrong, with its
// own retries and messages.
type baseUnchecked struct{ err error }

func (e baseUnchecked) Error() string { return "could not check the base image: " + e.err.Error() }
func (e baseUnchecked) Unwrap() error { return e.err }

// pinBaseImage asks the base image's registry, with the build's registry
// credentials (the request's, then the tenant's docker config), for the
// image's digest, and returns the reference pinned to it (tag@digest), so
// that a base image that does not exist is found before the build is
// queued, and the build uses the image the record names. The registry is
// reached under the host policy of the server's own connections (allow),
// as git hosts are. The error is a
// *notFoundField for an image the registry does not have, or a
// baseUnchecked with the reference as it was given.
func (s *Server) pinBaseImage(ctx context.Context, ref string, allow egress.Allowance, docker *configfile.ConfigFile, creds *credentials.Build) (string, error) {
	return s.pinImage(ctx, "base_image", ref, allow, docker, creds)
}

// pinBuilderImage is pinBaseImage for the server's builder image: a
// builder that does not exist is NotFound naming builder_image (the
// server's option; the caller can't fix it, but learns it before the build
// is queued). A builder found is remembered for builderTTL.
func (s *Server) pinBuilderImage(ctx context.Context, allow egress.Allowance, docker *configfile.ConfigFile, creds *credentials.Build) (string, error) {
	ref := s.cfg.BuilderImage
	s.mu.Lock()
	pinned, ok := s.builderPin, time.Now().Before(s.builderPinUntil)
	s.mu.Unlock()
	if ok {
		return pinned, nil
	}
	pinned, err := s.pinImage(ctx, "builder_image", ref, allow, docker, creds)
	if err != nil {
		if nf, ok := errors.AsType[*notFoundField](err); ok {
			nf.reason = fmt.Sprintf("the server's builder image %s does not exist in its registry (an operator's setting: --builder-image)", quote(ref))
		}
		return ref, err
	}
	s.mu.Lock()
	s.builderPin, s.builderPinUntil = pinned, time.Now().Add(builderTTL)
	s.mu.Unlock()
	return pinned, nil
}

// builderTTL is how long a builder image's digest is used before its tag
// is asked again.
const builderTTL = 30 * time.Second

// pinImage is pinBaseImage for the image ref of field.
func (s *Server) pinImage(ctx context.Context, field, ref string, allow egress.Allowance, docker *configfile.ConfigFile, creds *credentials.Build) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fieldErr(field, "%s is not a valid image reference", quote(ref))
	}
	if _, ok := r.(name.Digest); ok {
		return ref, nil
	}
	desc, err := remote.Head(r, remote.WithContext(ctx), remote.WithTransport(s.registryTransport(allow)),
		remote.WithAuthFromKeychain(registryKeychain{docker: docker, creds: creds}))
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)) {
			return "", &notFoundField{field, fmt.Sprintf("%s does not exist in its registry", quote(ref))}
		}
		return ref, baseUnchecked{err}
	}
	return r.Name() + "@" + desc.Digest.String(), nil
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// registryTransport is the server's transport to a registry a request
// names: the system roots and the server's internal CAs, no proxy, and
// every connection through the host policy of the server's own
// connections (allow: the server's and the tenant's allowances), on the
// ports of https and http or those allowed.
func (s *Server) registryTransport(allow egress.Allowance) http.RoundTripper {
	allow.Ports = append(slices.Clone(allow.Ports), egress.UsualPorts["http"]...)
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = egress.For("https", allow).Dialer().DialContext
	tr.TLSClientConfig = &tls.Config{RootCAs: s.regRoots, MinVersion: tls.VersionTLS12}
	return tr
}

// RegistryKeychain is a go-containerregistry keychain of the docker
// config in dir ($DOCKER_CONFIG or ~/.docker if empty): the server's own
// registry credentials, e.g. for a build-cache store in a registry.
func RegistryKeychain(dir string) (authn.Keychain, error) {
	docker, err := buildkitd.LoadDockerConfig(dir)
	if err != nil {
		return nil, err
	}
	return registryKeychain{docker: docker}, nil
}

// registryKeychain answers go-containerregistry's credential lookups as
// the build's session does: the request's registry credentials, then the
// docker config.
type registryKeychain struct {
	docker *configfile.ConfigFile
	creds  *credentials.Build
}

// Resolve implements authn.Keychain.
func (k registryKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	host := res.RegistryStr()
	for _, r := range k.creds.RegistriesFor(host) {
		return authn.FromConfig(authn.AuthConfig{Username: r.Username, Password: r.Password, IdentityToken: r.IdentityToken}), nil
	}
	if k.docker == nil {
		return authn.Anonymous, nil
	}
	key := host
	if host == name.DefaultRegistry {
		key = "https://index.docker.io/v1/"
	}
	ac, err := k.docker.GetAuthConfig(key)
	if err != nil {
		return nil, err
	}
	if ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}), nil
}

// pinImages pins r's base image and the server's builder image to their
// digests, asking both registries at once. An image that does not exist
// is an error; one whose registry could not be asked is left to the
// build.
func (s *Server) pinImages(ctx context.Context, r *request, tenantAllow egress.Allowance, docker *configfile.ConfigFile, creds *credentials.Build) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ResolveTimeout)
	defer cancel()
	allow := s.egressAllow().Add(tenantAllow)
	var baseErr, builderErr error
	var wg sync.WaitGroup
	wg.Go(func() { r.BaseImage, baseErr = s.pinBaseImage(ctx, r.BaseImage, allow, docker, creds) })
	wg.Go(func() { r.Builder, builderErr = s.pinBuilderImage(ctx, allow, docker, creds) })
	wg.Wait()
	for _, err := range []error{baseErr, builderErr} {
		if _, unchecked := errors.AsType[baseUnchecked](err); unchecked {
			s.cfg.Logger.Info("image not checked before the build", "base", r.BaseImage, "builder", r.Builder, "err", err)
		} else if err != nil {
			return err
		}
	}
	if baseErr == nil {
		// The base must have every platform asked for.
		err := s.checkBasePlatforms(ctx, r, allow, docker, creds)
		if _, unchecked := errors.AsType[baseUnchecked](err); unchecked {
			s.cfg.Logger.Info("base image's platforms not checked before the build", "base", r.BaseImage, "err", err)
		} else if err != nil {
			return err
		}
	}
	return nil
}
