package server

import (
	"fmt"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Limits on a request's fields, checked before anything else. They are far
// above what real builds need and low enough that no request can make the
// server log, store or hand buildkitd megabytes of text.
const (
	MaxRepoLen       = 2048     // git_repo, bytes
	MaxRefLen        = 255      // git_commit, bytes (git's own limit on a ref name)
	MaxImageRefLen   = 512      // image_tag and base_image, bytes
	MaxPathLen       = 1024     // dir and package, bytes
	MaxBuildFlags    = 64       // build_flags entries
	MaxBuildFlagLen  = 1024     // one build flag, bytes
	MaxLDFlagsLen    = 4096     // ldflags, bytes
	MaxEnv           = 64       // env entries
	MaxEnvKeyLen     = 128      // an env key, bytes
	MaxEnvValueLen   = 4096     // an env value, bytes
	MaxLabels        = 64       // labels entries
	MaxLabelKeyLen   = 256      // a label key, bytes
	MaxLabelValueLen = 4096     // a label value, bytes
	MaxLabelsBytes   = 64 << 10 // all label keys and values together
	MaxEnvBytes      = 32 << 10 // all env keys and values together
	MaxRequestBytes  = 1 << 20  // a whole request message as received (see GRPCServerOptions)
)

// checkLimits refuses a request with a field over its limit, naming the
// field and the limit, never quoting the field.
func checkLimits(req *buildv1.CreateImageRequest) error {
	for _, f := range []struct {
		field string
		value string
		max   int
	}{
		{"git_repo", req.GetGitRepo(), MaxRepoLen},
		{"git_commit", req.GetGitCommit(), MaxRefLen},
		{"image_tag", req.GetImageTag(), MaxImageRefLen},
		{"base_image", req.GetBaseImage(), MaxImageRefLen},
		{"dir", req.GetDir(), MaxPathLen},
		{"package", req.GetPackage(), MaxPathLen},
		{"ldflags", req.GetLdflags(), MaxLDFlagsLen},
	} {
		if len(f.value) > f.max {
			return tooLong(f.field, len(f.value), f.max)
		}
	}
	if n := len(req.GetImageTags()); n > MaxImageTags {
		return fieldErr("image_tags", "has %d tags; at most %d", n, MaxImageTags)
	}
	for i, t := range req.GetImageTags() {
		if len(t) > MaxImageRefLen {
			return tooLong(fmt.Sprintf("image_tags[%d]", i), len(t), MaxImageRefLen)
		}
	}
	if len(req.GetRequestId()) > 128 {
		return tooLong("request_id", len(req.GetRequestId()), 128)
	}
	if err := checkMap("build_labels", req.GetBuildLabels(), MaxBuildLabels, 63, MaxBuildLabelValueLen, MaxBuildLabels*(64+MaxBuildLabelValueLen)); err != nil {
		return err
	}
	if n := len(req.GetBuildFlags()); n > MaxBuildFlags {
		return fieldErr("build_flags", "has %d entries; at most %d", n, MaxBuildFlags)
	}
	for i, f := range req.GetBuildFlags() {
		if len(f) > MaxBuildFlagLen {
			return tooLong(fmt.Sprintf("build_flags[%d]", i), len(f), MaxBuildFlagLen)
		}
	}
	if err := checkMap("env", req.GetEnv(), MaxEnv, MaxEnvKeyLen, MaxEnvValueLen, MaxEnvBytes); err != nil {
		return err
	}
	return checkMap("labels", req.GetLabels(), MaxLabels, MaxLabelKeyLen, MaxLabelValueLen, MaxLabelsBytes)
}

func checkMap(field string, m map[string]string, maxEntries, maxKey, maxValue, maxTotal int) error {
	if len(m) > maxEntries {
		return fieldErr(field, "has %d entries; at most %d", len(m), maxEntries)
	}
	total := 0
	for _, k := range sortedKeys(m) {
		if len(k) > maxKey {
			return fieldErr(field, "has a key of %d bytes; at most %d", len(k), maxKey)
		}
		if len(m[k]) > maxValue {
			return tooLong(field+"["+k+"]", len(m[k]), maxValue)
		}
		total += len(k) + len(m[k])
	}
	if total > maxTotal {
		return fieldErr(field, "has %d bytes of keys and values; at most %d", total, maxTotal)
	}
	return nil
}

func tooLong(field string, n, max int) error {
	return fieldErr(field, "is %d bytes long; at most %d", n, max)
}

// maxQuoted is how much of a bad value an error quotes.
const maxQuoted = 64

// quote returns s quoted, cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q...", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}
