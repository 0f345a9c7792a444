package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// Retries of a build that failed on a registry's passing trouble (429 Too
// Many Requests, a 5xx, a dropped connection) after BuildKit's own
// retries: the build runs again, which costs little (its steps and the
// layers already pushed are cached), after a pause that grows from
// registryRetryFirst up to registryRetryMax, or as long as the registry's
// Retry-After says, up to registryAttempts runs in all.
var (
	registryAttempts   = 4
	registryRetryFirst = 2 * time.Second
	registryRetryMax   = 30 * time.Second
)

// registryTrouble is a registry's passing failure, as read from an error.
type registryTrouble struct {
	host   string // the registry, host[:port]
	scheme string // of the request that failed
	why    string // "429 Too Many Requests", "connection reset by peer", ...
}

// Error texts of a registry's passing failures as BuildKit reports them
// (containerd's resolver and pusher keep only text of the registry's
// answer, like the refusals textCode reads): an unexpected status of a
// request to a registry URL, or a request whose connection broke.
var (
	registryStatusRe = regexp.MustCompile(`(?i)unexpected status(?: code)? from [A-Z]+ request to (https?://[^\s:/]+(?::\d+)?)/\S*: ((?:429|5\d\d)\b[^:"]*)`)
	// A registry's JSON error of code TOOMANYREQUESTS, which containerd
	// reports by its code and message after the image's name.
	registryLimitRe = regexp.MustCompile(`(?i)((?:[a-z0-9-]+\.)*[a-z0-9-]+(?::\d+)?)/[^\s:]+(?::[\w.-]+)?(?:@sha256:[a-f0-9]+)?: (toomanyrequests: [^:]*)`)
	registryConnRe  = regexp.MustCompile(`(?i)(?:put|post|patch|head|get) "(https?://[^\s:/"]+(?::\d+)?)/[^"]*": .*?(connection reset by peer|broken pipe|unexpected EOF|EOF)$`)
)

// registryTroubleOf reports whether err is a registry's passing failure.
func registryTroubleOf(err error) (registryTrouble, bool) {
	msg := strings.TrimSpace(err.Error())
	if m := registryLimitRe.FindStringSubmatch(msg); m != nil {
		// BuildKit reaches a registry on a loopback address over plain
		// HTTP (unless buildkitd.toml says otherwise), others over HTTPS.
		scheme := "https"
		if h, _, err := net.SplitHostPort(m[1]); (err == nil && isLoopbackHost(h)) || isLoopbackHost(m[1]) {
			scheme = "http"
		}
		return registryTrouble{host: m[1], scheme: scheme, why: "429 Too Many Requests (" + strings.TrimSpace(m[2]) + ")"}, true
	}
	for _, re := range []*regexp.Regexp{registryStatusRe, registryConnRe} {
		if m := re.FindStringSubmatch(msg); m != nil {
			u, perr := url.Parse(m[1])
			if perr != nil {
				continue
			}
			return registryTrouble{host: u.Host, scheme: u.Scheme, why: strings.TrimSpace(m[2])}, true
		}
	}
	return registryTrouble{}, false
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// retryAfter asks the registry's API root how long it wants clients to
// wait: the Retry-After of a 429 or 503 answer (seconds or a date), 0 if
// it says nothing. The request goes under b's host policy, as the server's
// other registry reads.
func (s *Server) retryAfter(ctx context.Context, b *build, rt registryTrouble) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rt.scheme+"://"+rt.host+"/v2/", nil)
	if err != nil {
		return 0
	}
	resp, err := (&http.Client{Transport: s.registryTransport(b.allow)}).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	return parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date; 0 if it is neither.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// registryRetry is the pause before the next run of a build that failed
// on rt, or false when the build should not run again: its attempts are
// spent, or the wait would outlast its context.
func (s *Server) registryRetry(ctx context.Context, b *build, rt registryTrouble, bo *backoff.ExponentialBackOff, attempt int) (time.Duration, bool) {
	if attempt >= registryAttempts {
		return 0, false
	}
	wait := bo.NextBackOff()
	if ra := s.retryAfter(ctx, b, rt); ra > wait {
		wait = min(ra, registryRetryMax)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		return 0, false
	}
	return wait, true
}

// newRegistryBackOff is the growing pause between registry retries.
func newRegistryBackOff() *backoff.ExponentialBackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.Multiplier = registryRetryFirst, registryRetryMax, 2
	bo.RandomizationFactor = 0.2
	bo.Reset()
	return bo
}

// registryRetryEvent says in the build's log that it runs again.
func registryRetryEvent(rt registryTrouble, wait time.Duration, next int) *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
		Short: fmt.Sprintf("the registry %s answered %s: trying again in %s (attempt %d of %d)",
			rt.host, rt.why, wait.Round(100*time.Millisecond), next, registryAttempts),
	}}}
}

// errRegistryUnavailable is a build that failed on a registry's trouble
// through every retry.
type errRegistryUnavailable struct {
	trouble  registryTrouble
	attempts int
	err      error
}

func (e errRegistryUnavailable) Error() string {
	return fmt.Sprintf("the registry %s is unavailable: %d attempts failed, the last on %s: %v",
		e.trouble.host, e.attempts, e.trouble.why, e.err)
}

func (e errRegistryUnavailable) Unwrap() error { return e.err }

// GRPCStatus gives the error its code.
func (e errRegistryUnavailable) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}
