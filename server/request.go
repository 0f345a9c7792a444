package server

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/buildsvc/buildsvc/llb"
	"github.com/buildsvc/buildsvc/policy"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// FieldError says which request field is not valid and why. It becomes a
// gRPC InvalidArgument naming the field.
type FieldError struct {
	// Field is the proto field name, e.g. "git_repo" or "env[GOOS]".
	Field string
	// Reason says what is wrong, without echoing secrets.
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// request is a CreateImageRequest that has been checked and defaulted: all
// of the build spec that needs no I/O.
type request struct {
	Repo string
	Ref  string
	// Tag is the first of Tags, every tag the image is pushed to.
	Tag        string
	Tags       []string
	Dir        string
	Package    string
	Binary     string
	BuildFlags []string
	LDFlags    string
	Env        map[string]string
	BaseImage  string
	// Builder is the server's builder image, pinned to its digest when
	// its registry answered (not part of the request).
	Builder string
	Labels  map[string]string
	Timeout time.Duration
	// GoPrivate, GoNoProxy and GoNoSumDB are the request's private module
	// settings (not secret).
	GoPrivate, GoNoProxy, GoNoSumDB string
	// Compression and CompressionLevel are the new layer's compression;
	// ForceCompression recompresses the base image's layers too.
	Compression      buildv1.LayerCompression
	CompressionLevel int
	ForceCompression bool
	// Provenance attaches BuildKit's SLSA provenance (the request's or the
	// server's choice).
	Provenance bool
	// SBOM attaches an SPDX SBOM of each platform's binary (the request's
	// or the server's choice).
	SBOM bool
	// Platforms are the request's target platforms, normalized; none
	// builds for the worker's own.
	Platforms []ocispecs.Platform
	// RequestID is the caller's idempotency key; BuildLabels the build
	// record's labels.
	RequestID   string
	BuildLabels map[string]string
	// creds are the request's credentials: in memory only, never in
	// proto().
	creds *requestCredentials
}

// reservedEnv are variables the service sets itself for every build.
var reservedEnv = map[string]bool{
	"GOOS": true, "GOARCH": true, "GOARM": true, "GOCACHE": true, "GOMODCACHE": true,
	"GOROOT": true, "HOME": true, "PATH": true,
}

var (
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	binaryRE   = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
	shaRE      = regexp.MustCompile(`^[0-9a-f]{40}$|^[0-9a-f]{64}$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	// buildLabelKeyRE and requestIDRE are the forms build_labels keys and
	// request_id take.
	buildLabelKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	requestIDRE     = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// Limits of the build record's fields.
const (
	MaxImageTags          = 16
	MaxBuildLabels        = 32
	MaxBuildLabelValueLen = 256
)

// parseRequest checks every field of req and fills in defaults. It does no
// I/O; the first bad field is returned as a *FieldError.
func parseRequest(req *buildv1.CreateImageRequest, cfg Config) (*request, error) {
	if req == nil {
		return nil, fieldErr("request", "is empty")
	}
	if err := checkLimits(req); err != nil {
		return nil, err
	}
	r := &request{
		LDFlags: req.GetLdflags(),
		Env:     map[string]string{},
		Labels:  map[string]string{},
	}
	var err error
	if r.Repo, err = parseRepo(req.GetGitRepo(), cfg.AllowInsecureGit); err != nil {
		return nil, err
	}
	if r.Ref, err = parseRef(req.GetGitCommit()); err != nil {
		return nil, err
	}
	if r.Tags, err = parseTags(req.GetImageTag(), req.GetImageTags()); err != nil {
		return nil, err
	}
	r.Tag = r.Tags[0]
	if id := req.GetRequestId(); id != "" {
		if !requestIDRE.MatchString(id) {
			return nil, fieldErr("request_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
		}
		r.RequestID = id
	}
	if r.BuildLabels, err = parseBuildLabels(req.GetBuildLabels()); err != nil {
		return nil, err
	}
	if r.Dir, err = parseRelPath("dir", req.GetDir()); err != nil {
		return nil, err
	}
	if r.Package, err = parsePackage(req.GetPackage()); err != nil {
		return nil, err
	}
	r.Binary = binaryName(r.Repo, r.Dir, r.Package)
	for i, f := range req.GetBuildFlags() {
		if err := policy.CheckBuildFlag(f, cfg.AllowBuild); err != nil {
			return nil, fieldErr(fmt.Sprintf("build_flags[%d]", i), "%v", err)
		}
		r.BuildFlags = append(r.BuildFlags, f)
	}
	if err := policy.CheckLDFlags(r.LDFlags, cfg.AllowBuild); err != nil {
		return nil, fieldErr("ldflags", "%v", err)
	}
	for _, k := range sortedKeys(req.GetEnv()) {
		v := req.GetEnv()[k]
		if !envKeyRE.MatchString(k) {
			return nil, fieldErr("env", "%s is not a valid variable name", quote(k))
		}
		field := "env[" + k + "]"
		if reservedEnv[k] {
			return nil, fieldErr(field, "is set by the service and can't be overridden")
		}
		var fe *policy.BuildFlagError
		if err := policy.CheckEnv(k, v, cfg.AllowBuild); errors.As(err, &fe) {
			return nil, fieldErr(field, "%s", fe.Reason)
		}
		r.Env[k] = v
	}
	r.BaseImage = cfg.BaseImage
	if b := strings.TrimSpace(req.GetBaseImage()); b != "" {
		ref, err := parseImageRef(b)
		if err != nil {
			return nil, fieldErr("base_image", "%v", err)
		}
		r.BaseImage = ref
	}
	for _, k := range sortedKeys(req.GetLabels()) {
		switch {
		case !labelKeyRE.MatchString(k):
			return nil, fieldErr("labels", "%s is not a valid label key", quote(k))
		case k == llb.LabelSource || k == llb.LabelRevision:
			return nil, fieldErr("labels["+k+"]", "is set by the service")
		}
		r.Labels[k] = req.GetLabels()[k]
	}
	r.Timeout = cfg.DefaultTimeout
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			return nil, fieldErr("timeout", "must be a positive duration")
		}
		r.Timeout = min(t.AsDuration(), cfg.MaxTimeout)
	}
	r.Provenance = req.GetProvenance() || cfg.Provenance
	r.SBOM = req.GetSbom() || cfg.SBOM
	if r.Platforms, err = parsePlatforms(req.GetPlatforms()); err != nil {
		return nil, err
	}
	if err := parseCompression(req, r, cfg); err != nil {
		return nil, err
	}
	if err := parseCredentials(req, r, cfg.AllowBuild); err != nil {
		return nil, err
	}
	return r, nil
}

// proto returns the request as accepted, with defaults filled in and
// without its credentials.
func (r *request) proto() *buildv1.CreateImageRequest {
	return &buildv1.CreateImageRequest{
		GitRepo:          r.Repo,
		GitCommit:        r.Ref,
		ImageTag:         r.Tag,
		ImageTags:        r.Tags,
		RequestId:        r.RequestID,
		Compression:      r.Compression,
		CompressionLevel: int32(r.CompressionLevel),
		ForceCompression: r.ForceCompression,
		Provenance:       r.Provenance,
		Platforms:        formatPlatforms(r.Platforms),
		Sbom:             r.SBOM,
		BuildLabels:      r.BuildLabels,
		Package:          r.Package,
		Dir:              r.Dir,
		BuildFlags:       r.BuildFlags,
		Ldflags:          r.LDFlags,
		Env:              r.Env,
		BaseImage:        r.BaseImage,
		Labels:           r.Labels,
		Timeout:          durationpb.New(r.Timeout),
		Goprivate:        r.GoPrivate,
		Gonoproxy:        r.GoNoProxy,
		Gonosumdb:        r.GoNoSumDB,
	}
}

func parseRepo(raw string, allowInsecure bool) (string, error) {
	const field = "git_repo"
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return "", fieldErr(field, "is required")
	case strings.HasPrefix(s, "-"):
		return "", fieldErr(field, "must not start with '-'")
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "", fieldErr(field, "must not contain spaces or control characters")
	}
	g, err := parseGitRemote(s)
	if err != nil {
		return "", fieldErr(field, "%v", err)
	}
	if g.HasPassword || (g.User != "" && g.Scheme != "ssh") {
		return "", fieldErr(field, "must not contain credentials; give them separately")
	}
	switch g.Scheme {
	case "ssh", "https", "git":
		// An ssh host's key must be known and a key given; the server
		// checks both once it knows the tenant's and the server's
		// credentials.
		if g.Hostname == "" {
			return "", fieldErr(field, "has no host")
		}
	case "http":
		if !allowInsecure {
			return "", fieldErr(field, "plain http:// is not allowed on this server; use https://")
		}
	case "file":
		if !allowInsecure {
			return "", fieldErr(field, "file:// repositories are not allowed on this server")
		}
	}
	if p := strings.Trim(g.Path, "/"); p == "" || p == ".git" {
		return "", fieldErr(field, "has no repository path")
	}
	return s, nil
}

// parseRef accepts what git accepts as a ref name or a full SHA, and refuses
// what could be taken for an option or a range.
func parseRef(raw string) (string, error) {
	const field = "git_commit"
	s := strings.TrimSpace(raw)
	if s == "" {
		return "HEAD", nil
	}
	switch {
	case strings.HasPrefix(s, "-"):
		return "", fieldErr(field, "must not start with '-'")
	case strings.Contains(s, ".."), strings.Contains(s, "@{"), strings.HasSuffix(s, ".lock"),
		strings.HasSuffix(s, "/"), strings.HasSuffix(s, "."), strings.Contains(s, "//"):
		return "", fieldErr(field, "%s is not a valid branch, tag or commit", quote(s))
	case strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("~^:?*[\\", r)
	}) >= 0:
		return "", fieldErr(field, "%s is not a valid branch, tag or commit", quote(s))
	}
	return s, nil
}

// parseTags checks image_tag and image_tags and returns every tag, image_tag
// first, each once.
func parseTags(first string, more []string) ([]string, error) {
	if strings.TrimSpace(first) == "" && len(more) == 0 {
		return nil, fieldErr("image_tag", "is required (or image_tags)")
	}
	if len(more) > MaxImageTags {
		return nil, fieldErr("image_tags", "has %d tags; at most %d", len(more), MaxImageTags)
	}
	var tags []string
	add := func(field, raw string) error {
		t, err := parseTag(field, raw)
		if err != nil {
			return err
		}
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
		return nil
	}
	if strings.TrimSpace(first) != "" {
		if err := add("image_tag", first); err != nil {
			return nil, err
		}
	}
	for i, t := range more {
		if err := add(fmt.Sprintf("image_tags[%d]", i), t); err != nil {
			return nil, err
		}
	}
	if len(tags) > MaxImageTags {
		return nil, fieldErr("image_tags", "with image_tag makes %d tags; at most %d", len(tags), MaxImageTags)
	}
	return tags, nil
}

// parseBuildLabels checks the build record's labels.
func parseBuildLabels(in map[string]string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxBuildLabels {
		return nil, fieldErr("build_labels", "has %d labels; at most %d", len(in), MaxBuildLabels)
	}
	out := make(map[string]string, len(in))
	for _, k := range sortedKeys(in) {
		v := in[k]
		switch {
		case !buildLabelKeyRE.MatchString(k):
			return nil, fieldErr("build_labels", "%s is not a valid key: 1-63 characters of a-z 0-9 _ -, starting with a letter", quote(k))
		case len(v) > MaxBuildLabelValueLen:
			return nil, fieldErr("build_labels["+k+"]", "is %d bytes long; at most %d", len(v), MaxBuildLabelValueLen)
		case strings.IndexFunc(v, unicode.IsControl) >= 0:
			return nil, fieldErr("build_labels["+k+"]", "must not contain control characters")
		}
		out[k] = v
	}
	return out, nil
}

func parseTag(field, raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", fieldErr(field, "is required")
	}
	if strings.Contains(s, "@") {
		return "", fieldErr(field, "must be a tag, not a digest: the digest is known only after the push")
	}
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		// StrictValidation wants an explicit registry and tag; the weak
		// form fills in docker.io and latest, as docker does.
		if t, err = name.NewTag(s); err != nil {
			return "", fieldErr(field, "%s is not a valid image reference", quote(s))
		}
	}
	return t.Name(), nil
}

// parseImageRef checks an image reference (tag or digest) and returns it in
// full form.
func parseImageRef(s string) (string, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return "", fmt.Errorf("%s is not a valid image reference", quote(s))
	}
	return ref.Name(), nil
}

// parseRelPath checks a slash-separated path relative to the repository
// root and returns it cleaned, "." for the root.
func parseRelPath(field, raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return ".", nil
	}
	if strings.HasPrefix(s, "/") || strings.Contains(s, "\\") || strings.ContainsRune(s, 0) {
		return "", fieldErr(field, "must be a relative path inside the repository")
	}
	c := path.Clean(s)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fieldErr(field, "must stay inside the repository")
	}
	return c, nil
}

func parsePackage(raw string) (string, error) {
	const field = "package"
	if strings.HasPrefix(strings.TrimSpace(raw), "-") {
		return "", fieldErr(field, "must not start with '-'")
	}
	if strings.Contains(raw, "...") {
		return "", fieldErr(field, "must name one main package, not a pattern")
	}
	p, err := parseRelPath(field, raw)
	if err != nil {
		return "", err
	}
	if p == "." {
		return ".", nil
	}
	return "./" + p, nil
}

// binaryName names the program after its package directory, or after the
// repository when the package is the module root.
func binaryName(repo, dir, pkg string) string {
	base := path.Base(pkg)
	if pkg == "." {
		base = path.Base(dir)
	}
	if base == "." || base == "/" {
		repo = strings.TrimSuffix(strings.TrimRight(repo, "/"), ".git")
		base = path.Base(strings.ReplaceAll(repo, ":", "/"))
	}
	base = strings.Trim(binaryRE.ReplaceAllString(base, "-"), ".-")
	if base == "" {
		return "app"
	}
	return base
}

// isSHA reports whether s is a full commit id.
func isSHA(s string) bool { return shaRE.MatchString(s) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// builder is the builder image the build uses: the pinned one, or the
// server's as configured (def) when it could not be pinned.
func (r *request) builder(def string) string {
	if r.Builder != "" {
		return r.Builder
	}
	return def
}
