package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// listFilter is what `builds ls --filter` keeps. States and the repository
// are ListBuildsRequest fields of their own; the rest becomes its filter
// (see filter).
type listFilter struct {
	states []buildv1.BuildState
	repo   string
	// tags and reasons keep builds with any of them.
	tags    []string
	reasons []string
	// labels keep builds with every one of them: "KEY=VALUE", or "KEY"
	// for a build that has the label.
	labels []string
	// since and before bound the creation time, when not zero.
	since, before time.Time
	// now is when a since or before duration is counted back from.
	now time.Time
}

// filterKeys are the keys --filter takes.
var filterKeys = []string{"state", "repo", "tag", "label", "reason", "since", "before"}

// parseFilters parses --filter values: KEY=VALUE, repeated or separated by
// commas; a part without "=" is one more value of the key before it, so
// state=failed,cancelled is both states. Durations of since and before
// count back from now. Each error names the filter.
func parseFilters(values []string, now time.Time) (listFilter, error) {
	f := listFilter{now: now}
	for _, value := range values {
		key := ""
		for _, part := range strings.Split(value, ",") {
			k, v, ok := strings.Cut(part, "=")
			switch {
			case ok:
				key = strings.ToLower(strings.TrimSpace(k))
			case key == "":
				return listFilter{}, fmt.Errorf("--filter %q: want KEY=VALUE, e.g. state=failed", value)
			default:
				v = part
			}
			v = strings.TrimSpace(v)
			if err := f.add(key, v); err != nil {
				return listFilter{}, fmt.Errorf("--filter %q: %w", value, err)
			}
		}
	}
	return f, nil
}

// add keeps builds whose key is v too.
func (f *listFilter) add(key, v string) error {
	if v == "" && key != "state" {
		return fmt.Errorf("%s is empty", key)
	}
	switch key {
	case "state":
		s, err := parseState(v)
		if err != nil {
			return err
		}
		if !slices.Contains(f.states, s) {
			f.states = append(f.states, s)
		}
	case "repo":
		if f.repo != "" && f.repo != v {
			return fmt.Errorf("one repo at a time: the server filters by one, and %s is given already", f.repo)
		}
		f.repo = v
	case "tag":
		if !slices.Contains(f.tags, v) {
			f.tags = append(f.tags, v)
		}
	case "reason":
		if !slices.Contains(f.reasons, v) {
			f.reasons = append(f.reasons, v)
		}
	case "label":
		k, _, _ := strings.Cut(v, "=")
		if !validLabelKey(k) {
			return fmt.Errorf("label key %q: want 1-63 characters of a-z, 0-9, _ and -, starting with a letter (label=KEY=VALUE or label=KEY)", k)
		}
		if !slices.Contains(f.labels, v) {
			f.labels = append(f.labels, v)
		}
	case "since", "before":
		t, err := parseWhen(v, f.now)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", key, v, err)
		}
		at := &f.since
		if key == "before" {
			at = &f.before
		}
		if !at.IsZero() && !at.Equal(t) {
			return fmt.Errorf("%s is given twice", key)
		}
		*at = t
	default:
		return fmt.Errorf("unknown filter %q: want %s", key, strings.Join(filterKeys, ", "))
	}
	return nil
}

// validLabelKey is what the server takes as a build label's key.
func validLabelKey(k string) bool {
	if k == "" || len(k) > 63 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	return strings.Trim(k, "abcdefghijklmnopqrstuvwxyz0123456789_-") == ""
}

// parseWhen reads the time of since= or before=: a duration back from now
// (a Go duration, or whole days: 7d), an RFC 3339 time, or a date
// (2006-01-02, the start of that day in local time).
func parseWhen(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("a negative duration")
		}
		return now.Add(-d), nil
	}
	if n, ok := strings.CutSuffix(v, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return now.AddDate(0, 0, -days), nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, v, time.Local); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a duration ago (10m, 2h, 7d), an RFC 3339 time (2026-12-01T15:04:05Z) or a date (2026-12-01)")
}

// filter is the ListBuildsRequest filter (AIP-160) of f's tags, labels,
// reasons and times, after where (the --where filter as given, first, so
// that the server's positions in its errors are where's own: AND binds
// loosest, so "where AND ..." keeps where's meaning).
func (f listFilter) filter(where string) string {
	var parts []string
	if w := strings.TrimSpace(where); w != "" {
		parts = append(parts, w)
	}
	anyOf := func(field string, values []string) {
		var alts []string
		for _, v := range values {
			alts = append(alts, field+" = "+strconv.Quote(v))
		}
		switch len(alts) {
		case 0:
		case 1:
			parts = append(parts, alts[0])
		default:
			parts = append(parts, "("+strings.Join(alts, " OR ")+")")
		}
	}
	anyOf("image_tag", f.tags)
	for _, l := range f.labels {
		if k, v, ok := strings.Cut(l, "="); ok {
			parts = append(parts, "labels."+k+" = "+strconv.Quote(v))
		} else {
			parts = append(parts, "labels."+k+":*")
		}
	}
	anyOf("error.reason", f.reasons)
	if !f.since.IsZero() {
		parts = append(parts, "create_time >= "+strconv.Quote(f.since.UTC().Format(time.RFC3339Nano)))
	}
	if !f.before.IsZero() {
		parts = append(parts, "create_time < "+strconv.Quote(f.before.UTC().Format(time.RFC3339Nano)))
	}
	return strings.Join(parts, " AND ")
}
