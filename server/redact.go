package server

import (
	"bytes"
	"cmp"
	"slices"
	"strings"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// mask is what a secret is replaced with.
const mask = "*****"

// minSecretLen is the shortest secret that is masked: masking shorter ones
// would mangle ordinary output.
const minSecretLen = 4

// redactor replaces known secrets with a mask wherever an event carries
// text. It masks each event on its own; step output, where a secret may be
// split across chunks, goes through a logMasker.
type redactor struct{ secrets []string }

// newRedactor returns a redactor for the secrets long enough to mask.
func newRedactor(secrets []string) redactor {
	var r redactor
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

func (r redactor) string(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, mask)
	}
	return s
}

func (r redactor) bytes(b []byte) []byte {
	for _, sec := range r.secrets {
		if bytes.Contains(b, []byte(sec)) {
			b = bytes.ReplaceAll(b, []byte(sec), []byte(mask))
		}
	}
	return b
}

// heldTail returns how many bytes at the end of b could be the start of a
// secret that the next chunk completes: the longest suffix of b that is a
// proper prefix of a secret.
func (r redactor) heldTail(b []byte) int {
	n := 0
	for _, sec := range r.secrets {
		for k := min(len(sec)-1, len(b)); k > n; k-- {
			if bytes.HasSuffix(b, []byte(sec[:k])) {
				n = k
				break
			}
		}
	}
	return n
}

// event masks secrets in every text field of e, log data included (a
// secret split across log chunks needs a logMasker).
func (r redactor) event(e *buildv1.BuildEvent) {
	if len(r.secrets) == 0 {
		return
	}
	switch ev := e.GetEvent().(type) {
	case *buildv1.BuildEvent_State:
		ev.State.Message = r.string(ev.State.Message)
	case *buildv1.BuildEvent_Vertex:
		ev.Vertex.Name = r.string(ev.Vertex.Name)
		ev.Vertex.Error = r.string(ev.Vertex.Error)
	case *buildv1.BuildEvent_Status:
		ev.Status.Name = r.string(ev.Status.Name)
	case *buildv1.BuildEvent_Log:
		ev.Log.Data = r.bytes(ev.Log.Data)
	case *buildv1.BuildEvent_Warning:
		ev.Warning.Short = r.string(ev.Warning.Short)
		for i := range ev.Warning.Detail {
			ev.Warning.Detail[i] = r.string(ev.Warning.Detail[i])
		}
	case *buildv1.BuildEvent_Error:
		ev.Error.Message = r.string(ev.Error.Message)
	}
}

// logStream names one output stream of one step.
type logStream struct {
	vertex string
	stream int32
}

// logMasker masks secrets in step output that arrives in chunks, where a
// secret may begin in one chunk and end in the next. Each stream's output
// is masked as one text: the bytes at the end of a chunk that could begin
// a secret are held back and put in front of the stream's next chunk. What
// is held is let out unmasked (it is not a whole secret) when the step
// completes or the build changes state. It is not safe for concurrent use.
type logMasker struct {
	r    redactor
	held map[logStream]*buildv1.BuildEvent // chunk whose Data is the held bytes
}

func newLogMasker(r redactor) *logMasker {
	return &logMasker{r: r, held: map[logStream]*buildv1.BuildEvent{}}
}

// mask masks e, a log chunk, and returns what of it may be let out now: e
// itself, with the bytes held from before in front and the bytes that may
// begin a secret taken off the end, or nil if every byte is held.
func (m *logMasker) mask(e *buildv1.BuildEvent) *buildv1.BuildEvent {
	lg := e.GetLog()
	if len(m.r.secrets) == 0 || lg == nil {
		return e
	}
	key := logStream{lg.GetVertex(), lg.GetStream()}
	data := lg.GetData()
	if h := m.held[key]; h != nil {
		data = append(h.GetLog().GetData(), data...) // the held bytes are the masker's own
		delete(m.held, key)
	}
	data = m.r.bytes(data)
	if n := m.r.heldTail(data); n > 0 {
		tail := &buildv1.LogChunk{Vertex: lg.GetVertex(), Stream: lg.GetStream(), Timestamp: lg.GetTimestamp(),
			Data: bytes.Clone(data[len(data)-n:])}
		m.held[key] = &buildv1.BuildEvent{Event: &buildv1.BuildEvent_Log{Log: tail}}
		data = data[:len(data)-n]
	}
	if len(data) == 0 {
		return nil
	}
	lg.Data = data
	return e
}

// release returns the chunks held for vertex (for every vertex if vertex
// is empty), ordered by vertex and stream, and forgets them.
func (m *logMasker) release(vertex string) []*buildv1.BuildEvent {
	var keys []logStream
	for key := range m.held {
		if vertex == "" || key.vertex == vertex {
			keys = append(keys, key)
		}
	}
	slices.SortFunc(keys, func(a, b logStream) int {
		return cmp.Or(strings.Compare(a.vertex, b.vertex), cmp.Compare(a.stream, b.stream))
	})
	out := make([]*buildv1.BuildEvent, 0, len(keys))
	for _, key := range keys {
		out = append(out, m.held[key])
		delete(m.held, key)
	}
	return out
}
