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
	out, _ := r.maskScan([]byte(s))
	return string(out)
}

func (r redactor) bytes(b []byte) []byte {
	out, _ := r.maskScan(b)
	return out
}

// maskScan replaces every secret in b with the mask, scanning from the
// start (where secrets overlap, the one that begins first wins, the longest
// if several begin there), and returns the result and the offset in it just
// past the last mask put in (0 if none): what follows is b's own text.
func (r redactor) maskScan(b []byte) ([]byte, int) {
	found := false
	for _, sec := range r.secrets {
		found = found || bytes.Contains(b, []byte(sec))
	}
	if !found {
		return b, 0
	}
	out := make([]byte, 0, len(b))
	end := 0
	for i := 0; i < len(b); {
		longest := 0
		for _, sec := range r.secrets {
			if len(sec) > longest && bytes.HasPrefix(b[i:], []byte(sec)) {
				longest = len(sec)
			}
		}
		if longest == 0 {
			out = append(out, b[i])
			i++
			continue
		}
		out = append(out, mask...)
		end = len(out)
		i += longest
	}
	return out, end
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
	data, end := m.r.maskScan(data)
	// Only the text after the last mask can begin a secret: a mask is not
	// the start of one.
	if n := m.r.heldTail(data[end:]); n > 0 {
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
