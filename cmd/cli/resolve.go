package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// How the commands that act on one build (get, logs, watch, cancel) find it:
// their BUILD_ID argument is a build's id, a prefix of it that only one of
// the caller's builds has, or "last", the caller's newest build.

// lastBuild is the BUILD_ID argument that names the caller's newest build.
const lastBuild = "last"

// buildRefUsage is the ArgsUsage of the commands that act on one build.
const buildRefUsage = "[BUILD_ID|PREFIX|last]"

// maxCandidates is how many of the builds an ambiguous prefix matches an
// error lists.
const maxCandidates = 5

// resolvePageSize is the page size of the listing that resolves a prefix:
// the server's largest, so that a long history takes few calls.
const resolvePageSize = 1000

// buildRefArg returns the command's one BUILD_ID argument, or "last" if
// there is none and orLast is set. Its error is a usage error.
func buildRefArg(cCtx *cli.Context, orLast bool) (string, error) {
	args := cCtx.Args().Slice()
	switch {
	case len(args) == 0 && orLast:
		return lastBuild, nil
	case len(args) == 0:
		return "", usageError(cCtx, "BUILD_ID is missing (give an id, a unique prefix of one, or %s)", lastBuild)
	case len(args) > 1:
		return "", usageError(cCtx, "want one BUILD_ID, got %d arguments", len(args))
	}
	ref := strings.TrimSpace(args[0])
	if ref == "" {
		return "", usageError(cCtx, "BUILD_ID is empty")
	}
	return ref, nil
}

// ambiguousError is findBuild's error for a prefix that more than one build
// has.
type ambiguousError struct {
	Prefix string
	// Candidates are the first builds that have it, newest first, at most
	// maxCandidates.
	Candidates []*buildv1.BuildInfo
	// More is set when other builds have it too.
	More bool
}

func (e *ambiguousError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q is the start of more than one build's id; give more of it:", e.Prefix)
	for _, c := range e.Candidates {
		fmt.Fprintf(&b, "\n  %s  %s", c.GetBuildId(), stateName(c.GetState()))
		if created := formatTime(c.GetCreateTime()); created != "" {
			b.WriteString("  " + created)
		}
	}
	if e.More {
		b.WriteString("\n  and more")
	}
	return b.String()
}

// noBuildError is findBuild's error when no build of the caller's matches.
type noBuildError struct {
	Ref string
}

func (e *noBuildError) Error() string {
	if e.Ref == lastBuild {
		return "there are no builds yet"
	}
	return fmt.Sprintf("no build has an id that is or starts with %q ('buildsvc builds ls' lists them)", e.Ref)
}

// callFailure is a failed call to the server while finding a build, with
// the name of the call for the command's error.
type callFailure struct {
	Call string
	Err  error
}

func (e *callFailure) Error() string { return e.Call + ": " + e.Err.Error() }
func (e *callFailure) Unwrap() error { return e.Err }

// findBuild finds the build ref names and returns its id and its record.
// ref is "last" (the newest of the builds ListBuilds shows the caller), a
// build id (GetBuild knows it), or else a prefix of exactly one of the ids
// ListBuilds shows the caller, found by listing them all. The errors are an
// *ambiguousError, a *noBuildError or a *callFailure.
func findBuild(ctx context.Context, bc buildv1.BuildClient, ref string) (string, *buildv1.BuildInfo, error) {
	if ref == lastBuild {
		resp, err := bc.ListBuilds(ctx, &buildv1.ListBuildsRequest{PageSize: 1})
		if err != nil {
			return "", nil, &callFailure{"list builds", err}
		}
		if len(resp.GetBuilds()) == 0 {
			return "", nil, &noBuildError{Ref: ref}
		}
		info := resp.GetBuilds()[0]
		return info.GetBuildId(), info, nil
	}
	info, err := bc.GetBuild(ctx, &buildv1.GetBuildRequest{BuildId: ref})
	if err == nil {
		return ref, info, nil
	}
	if st, ok := grpcStatus(err); !ok || st.Code() != codes.NotFound {
		return "", nil, &callFailure{"get build", err}
	}
	return findPrefix(ctx, bc, ref)
}

// findPrefix lists the caller's builds, page by page, for those whose id
// starts with prefix. It stops once it has seen more than maxCandidates.
func findPrefix(ctx context.Context, bc buildv1.BuildClient, prefix string) (string, *buildv1.BuildInfo, error) {
	req := &buildv1.ListBuildsRequest{PageSize: resolvePageSize}
	var found []*buildv1.BuildInfo
	for {
		resp, err := bc.ListBuilds(ctx, req)
		if err != nil {
			return "", nil, &callFailure{"list builds", err}
		}
		for _, info := range resp.GetBuilds() {
			if strings.HasPrefix(info.GetBuildId(), prefix) {
				found = append(found, info)
			}
		}
		next := resp.GetNextPageToken()
		if len(found) > maxCandidates || next == "" || next == req.GetPageToken() {
			break
		}
		req.PageToken = next
	}
	switch len(found) {
	case 0:
		return "", nil, &noBuildError{Ref: prefix}
	case 1:
		return found[0].GetBuildId(), found[0], nil
	}
	e := &ambiguousError{Prefix: prefix, Candidates: found, More: len(found) > maxCandidates}
	if e.More {
		e.Candidates = found[:maxCandidates]
	}
	return "", nil, e
}

// findError turns findBuild's error into the command's: an ambiguous prefix
// is bad usage, no match is NotFound's exit code, and a failed call keeps
// its gRPC code as callError has it.
func findError(cCtx *cli.Context, err error) error {
	var (
		amb  *ambiguousError
		none *noBuildError
		call *callFailure
	)
	switch {
	case errors.As(err, &amb):
		return usageError(cCtx, "%v", amb)
	case errors.As(err, &none):
		return cli.Exit(none.Error(), exitCodeFor(codes.NotFound))
	case errors.As(err, &call):
		return callError(cCtx, call.Call, call.Err)
	default:
		return err
	}
}

// resolveBuild reads the BUILD_ID argument (see buildRefArg), dials the
// server and finds the build, for the commands that act on one build. Call
// closeConn when done. Its errors are the command's.
func resolveBuild(cCtx *cli.Context, orLast bool) (id string, info *buildv1.BuildInfo, bc buildv1.BuildClient, closeConn func(), err error) {
	ref, err := buildRefArg(cCtx, orLast)
	if err != nil {
		return "", nil, nil, nil, err
	}
	bc, closeConn, err = dialServer(cCtx)
	if err != nil {
		return "", nil, nil, nil, err
	}
	id, info, err = findBuild(cCtx.Context, bc, ref)
	if err != nil {
		closeConn()
		return "", nil, nil, nil, findError(cCtx, err)
	}
	return id, info, bc, closeConn, nil
}

// buildRefHelp explains BUILD_ID in the help of the commands that take it.
const buildRefHelp = "BUILD_ID is a build's id, or the start of it when no other build of yours\n" +
	"starts the same way ('builds ls' shows ids so shortened), or last: your newest\n" +
	"build."

// buildRefOrLastHelp is buildRefHelp for the commands where BUILD_ID may be
// left out.
const buildRefOrLastHelp = buildRefHelp + " Without BUILD_ID, the command takes last."
