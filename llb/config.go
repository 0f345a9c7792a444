package llb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/util/gitutil"
	"github.com/moby/buildkit/util/system"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// parsedConfig is an OCI image config kept as raw JSON fields, so that the
// fields this package does not know (a Docker Healthcheck, vendor
// extensions) pass through to the pushed image unchanged.
type parsedConfig struct {
	top    map[string]json.RawMessage // the whole config
	config map[string]json.RawMessage // its "config" object (ENV, USER...)
	env    []string
}

// parseImageConfig parses an OCI image config; nil or empty input gives nil.
func parseImageConfig(dt []byte) (*parsedConfig, error) {
	if len(bytes.TrimSpace(dt)) == 0 {
		return nil, nil
	}
	// BuildKit's State.WithImageConfig reads the typed form: check it here
	// so a bad config fails before the graph is made.
	var img ocispecs.Image
	if err := json.Unmarshal(dt, &img); err != nil {
		return nil, err
	}
	var p parsedConfig
	if err := json.Unmarshal(dt, &p.top); err != nil {
		return nil, err
	}
	if p.top == nil {
		return nil, errors.New("config is null")
	}
	if raw, ok := p.top["config"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &p.config); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if p.config == nil {
		p.config = map[string]json.RawMessage{}
	}
	if raw, ok := p.config["Env"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &p.env); err != nil {
			return nil, fmt.Errorf("config.Env: %w", err)
		}
	}
	return &p, nil
}

// hasEnv tells whether the config's Env sets key.
func (p *parsedConfig) hasEnv(key string) bool {
	for _, kv := range p.env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// envValue is the value the config's Env gives key, if it sets it.
func (p *parsedConfig) envValue(key string) (string, bool) {
	for _, kv := range p.env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// imageConfig is the config of the pushed image: the base image's config
// (or a minimal one for a base without config) with the target platform,
// the binary as entrypoint and the labels.
//
// The base's rootfs and history stay as they are: BuildKit's image exporter
// rebuilds rootfs.diff_ids from the layers it exports and appends a history
// entry for each layer the history does not account for, i.e. the copy.
// The base's "created" is dropped, so that the exporter sets it from the
// new layer's history entry (clamped to SOURCE_DATE_EPOCH when that is
// set) instead of leaving the base image's date.
func imageConfig(s Spec, base *parsedConfig) ([]byte, error) {
	if base == nil {
		base = minimalConfig(s)
	}
	top, cfg := base.top, base.config

	delete(top, "created")
	setOrDelete(top, "architecture", s.Platform.Architecture)
	setOrDelete(top, "os", s.Platform.OS)
	setOrDelete(top, "variant", s.Platform.Variant)
	setOrDelete(top, "os.version", s.Platform.OSVersion)
	if len(s.Platform.OSFeatures) > 0 {
		top["os.features"] = mustJSON(s.Platform.OSFeatures)
	} else {
		delete(top, "os.features")
	}

	cfg["Entrypoint"] = mustJSON([]string{binaryPath(s)})
	delete(cfg, "Cmd")
	var wd string
	if raw, ok := cfg["WorkingDir"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &wd); err != nil {
			return nil, fmt.Errorf("%w: base image config: config.WorkingDir: %w", ErrInvalidSpec, err)
		}
	}
	if wd == "" {
		cfg["WorkingDir"] = mustJSON("/")
	}

	labels := map[string]string{}
	if raw, ok := cfg["Labels"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &labels); err != nil {
			return nil, fmt.Errorf("%w: base image config: config.Labels: %w", ErrInvalidSpec, err)
		}
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[LabelSource] = sourceURL(s.Repo)
	labels[LabelRevision] = s.Commit
	cfg["Labels"] = mustJSON(labels)

	top["config"] = mustJSON(cfg)
	return marshalJSON(top), nil
}

// minimalConfig is the config of an image without one, like BuildKit's
// Dockerfile frontend gives `FROM scratch`: the default PATH, no layers.
func minimalConfig(s Spec) *parsedConfig {
	return &parsedConfig{
		top: map[string]json.RawMessage{
			"rootfs": json.RawMessage(`{"type":"layers","diff_ids":[]}`),
		},
		config: map[string]json.RawMessage{
			"Env": mustJSON([]string{"PATH=" + system.DefaultPathEnv(s.Platform.OS)}),
		},
	}
}

func setOrDelete(m map[string]json.RawMessage, key, value string) {
	if value == "" {
		delete(m, key)
		return
	}
	m[key] = mustJSON(value)
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// mustJSON marshals values that cannot fail to marshal (strings, string
// slices and maps, raw JSON already checked by json.Unmarshal).
func mustJSON(v any) json.RawMessage {
	return marshalJSON(v)
}

// marshalJSON is json.Marshal without HTML escaping, so strings from the
// base config keep their bytes; map keys come out sorted.
func marshalJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("llb: marshal %T: %v", v, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// sourceURL is repo without user info (an ssh user name), for the source
// label: an scp-like URL becomes ssh://host/path.
func sourceURL(repo string) string {
	u, err := gitutil.ParseURL(repo)
	if err != nil || u.User == nil {
		return repo
	}
	if u.Scheme == gitutil.SSHProtocol {
		return "ssh://" + u.Host + "/" + strings.TrimPrefix(u.Path, "/")
	}
	return repo
}
