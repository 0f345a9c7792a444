package server

import (
	"bytes"
	"strings"
	"time"

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

// compileMissedModules reports whether the compile step in b's log after
// seq failed because the module cache lacked a module: BuildKit reused a
// download step whose modules have since been pruned from the cache. Call
// it after the solve has returned: by then every status of it is in the log
// (runBuild waits for the status stream to end).
func compileMissedModules(l *eventLog, seq uint64) bool {
	evs, _, _ := l.since(seq)
	compile := map[string]bool{} // vertex digests of the compile step
	var out bytes.Buffer
	for _, e := range evs {
		if v := e.GetVertex(); v != nil && strings.HasPrefix(v.GetName(), compileNameMarker) {
			compile[v.GetDigest()] = true
		}
		if lg := e.GetLog(); lg != nil && compile[lg.GetVertex()] {
			out.Write(lg.GetData())
		}
	}
	return missedModules(out.Bytes())
}

// modulesRefetched is the warning a build gets when its download step runs
// again.
func modulesRefetched() *buildv1.BuildEvent {
	return &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Warning{Warning: &buildv1.Warning{
		Short: "the module cache lacked modules a cached download step had fetched (the cache was pruned); downloading them again",
	}}}
}
