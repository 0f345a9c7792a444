package server

import (
	"bytes"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// offlineMissing are what the go command prints when the compile step
// (GOPROXY=off, no network, the module cache read-only) needs a module or
// toolchain that is not in the module cache: it starts to download it, then
// fails on GOPROXY=off or on the read-only cache. They are the go command's
// output, not error values of any API, so they are matched as text, in the
// compile step's log only.
var offlineMissing = [][]byte{[]byte("go: downloading "), []byte("module lookup disabled by GOPROXY=off")}

func missedModules(out []byte) bool {
	for _, m := range offlineMissing {
		if bytes.Contains(out, m) {
			return true
		}
	}
	return false
}

// compileNameMarker starts the name of the compile step (llb's custom name
// "go build <package>").
const compileNameMarker = "go build "

// modulesKey names the download steps that share a module cache and a
// cache scope: a tenant's, on one module cache.
func modulesKey(tenant, modCacheID string) string { return tenant + "\x00" + modCacheID }

// modulesGeneration returns the generation of the download step of key: 0
// until a build meets a pruned module cache.
func (s *Server) modulesGeneration(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.modGen[key]
}

// nextModulesGeneration moves key past generation seen (the one a failed
// build used) and returns the new one: a value no server has used before
// (the time), so that no download step BuildKit cached under it can exist.
// Builds that failed on the same generation at once move it once.
func (s *Server) nextModulesGeneration(key string, seen int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.modGen[key] == seen {
		s.modGen[key] = max(time.Now().UnixNano(), seen+1)
	}
	return s.modGen[key]
}

// downloadNameMarker is the name of the download step.
const downloadNameMarker = "go mod download"

// noSecureProtocol is what go prints when it could reach a module's
// repository (straight from its host, GOPRIVATE) over none of https and
// ssh: git failed on each, most often on a certificate of an internal CA or
// on missing credentials. go does not say which.
var noSecureProtocol = []byte("no secure protocol found for repository")

// stepOutput returns what the compile step and the download step printed
// in l after seq. Call it after the solve has returned: by then every
// status of it is in the log (runBuild waits for the status stream to
// end).
func stepOutput(l *eventLog, seq uint64) (compile, download []byte) {
	evs, _, _ := l.since(seq)
	step := map[string]string{} // vertex digest -> the step's marker
	var cc, dl bytes.Buffer
	for _, e := range evs {
		if v := e.GetVertex(); v != nil {
			switch name := v.GetName(); {
			case strings.HasPrefix(name, compileNameMarker):
				step[v.GetDigest()] = compileNameMarker
			case name == downloadNameMarker:
				step[v.GetDigest()] = downloadNameMarker
			}
		}
		if lg := e.GetLog(); lg != nil {
			switch step[lg.GetVertex()] {
			case compileNameMarker:
				cc.Write(lg.GetData())
			case downloadNameMarker:
				dl.Write(lg.GetData())
			}
		}
	}
	return cc.Bytes(), dl.Bytes()
}

// compileMissedModules reports whether the compile step in b's log after
// seq failed because the module cache lacked a module: BuildKit reused a
// download step whose modules have since been pruned from the cache. A
// download step of this solve that could not reach a private module's host
// is not that: another download would fail the same way.
func compileMissedModules(l *eventLog, seq uint64) bool {
	cc, dl := stepOutput(l, seq)
	return missedModules(cc) && !bytes.Contains(dl, noSecureProtocol)
}

// errPrivateModuleUnreachable is a build whose download step could not
// reach the repository of a module that comes straight from its host.
type errPrivateModuleUnreachable struct{ err error }

func (e errPrivateModuleUnreachable) Error() string {
	return e.err.Error() + "; go mod download could not fetch a module straight from its host (GOPRIVATE) over https or ssh " +
		"(see the download step's log): the host's certificate may be from a CA the builder does not trust (the server's ca-bundle adds internal CAs), " +
		"or the host wants credentials (the server's git-credentials, the request's module_credentials or git_credentials)"
}

func (e errPrivateModuleUnreachable) Unwrap() error { return e.err }

// GRPCStatus gives the error its code: the build's sources are fine, the
// server's or the request's setup is not.
func (e errPrivateModuleUnreachable) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}

// explainDownload wraps err of a failed build whose download step, in l
// after seq, could not reach a private module's host.
func explainDownload(err error, l *eventLog, seq uint64) error {
	if _, dl := stepOutput(l, seq); bytes.Contains(dl, noSecureProtocol) {
		return errPrivateModuleUnreachable{err}
	}
	return err
}

// modulesRefetched is the warning a build gets when its download step runs
// again.
func modulesRefetched() *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
		Short: "the module cache lacked modules a cached download step had fetched (the cache was pruned); downloading them again",
	}}}
}
