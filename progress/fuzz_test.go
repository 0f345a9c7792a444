package progress

import (
	"bytes"
	"math"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
)

// FuzzFromSolveStatus maps arbitrary BuildKit progress updates onto build
// events: it never panics, gives one event per non-nil entry in the
// documented order, each with exactly one payload and nothing the event
// log fills in, every text field valid UTF-8 so that the event marshals,
// and the log data byte for byte, in order, also when mapped back.
func FuzzFromSolveStatus(f *testing.F) {
	// vertex digest, name, error, log data, stream, warning short, warning
	// detail (lines split at '\n'), status current and total, time (unix
	// nanoseconds), shape (bits: which timestamps are set, which entries
	// are nil, cached; see below), cuts (each byte the length of the next
	// log chunk, modulo 32).
	f.Add(digest.FromString("a").String(), "[1/3] RUN go build ./...", "", []byte("go: downloading x\n"), int64(1),
		[]byte(""), []byte(""), int64(0), int64(0), int64(1764064800000000000), uint16(0b0000_0011), []byte{})
	f.Add(digest.FromString("b").String(), "copy /out/app", "process \"/bin/sh -c go build\" did not complete successfully: exit code: 1",
		[]byte("line 1\nline 2\r\nline 3"), int64(2), []byte("InvalidDefaultArgInFrom"), []byte("a detail\nsecond line"),
		int64(512), int64(1024), int64(0), uint16(0b0011_1111), []byte{1, 0, 5})
	f.Add("not a digest", "na\xffme", "err\xc3", []byte("\xff\xfe\x00bin\x00ary"), int64(-1),
		[]byte("sh\xe2ort"), []byte("\xff\n\n"), int64(-3), int64(1<<62), int64(-1), uint16(0b1100_0000), []byte{2, 2, 2})
	f.Add("", "", "", []byte(nil), int64(1<<40), []byte(nil), []byte(nil), int64(0), int64(0),
		int64(1<<62), uint16(0b1111_0000_0000), []byte{0, 0})
	f.Add("sha256:\x80", "cached step", "", []byte("x"), int64(0), []byte("w"), []byte("\n"),
		int64(7), int64(7), int64(253402300800000000), uint16(0b0001_0000_0101_0101), []byte{31, 31})
	f.Fuzz(func(t *testing.T, dg, name, errText string, logData []byte, stream int64, short, detail []byte,
		current, total, nanos int64, shape uint16, cuts []byte) {
		bit := func(i uint) bool { return shape&(1<<i) != 0 }
		tm := time.Unix(0, nanos).UTC()
		at := func(i uint) *time.Time {
			if !bit(i) {
				return nil
			}
			c := tm.Add(time.Duration(i) * time.Second)
			return &c
		}
		// A digest comes from BuildKit's protobuf, so it is valid UTF-8;
		// other bytes stand for a digest BuildKit itself would compute.
		d := digest.Digest(dg)
		if !utf8.ValidString(dg) {
			d = digest.FromString(dg)
		}
		var detailLines [][]byte
		if len(detail) > 0 {
			detailLines = bytes.Split(detail, []byte("\n"))
		}
		logTime := time.Time{}
		if bit(4) {
			logTime = tm
		}

		s := &client.SolveStatus{
			Vertexes: []*client.Vertex{{Digest: d, Inputs: []digest.Digest{d, digest.FromString(name)}, Name: name,
				Started: at(0), Completed: at(1), Cached: bit(5), Error: errText}},
			Statuses: []*client.VertexStatus{{ID: name, Vertex: d, Name: errText, Current: current, Total: total,
				Timestamp: logTime, Started: at(2), Completed: at(3)}},
			Warnings: []*client.VertexWarning{{Vertex: d, Level: int(stream), Short: short, Detail: detailLines, URL: errText}},
		}
		var chunks [][]byte
		rest := logData
		for _, c := range cuts {
			n := min(int(c)%32, len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		chunks = append(chunks, rest)
		for _, c := range chunks {
			s.Logs = append(s.Logs, &client.VertexLog{Vertex: d, Stream: int(stream), Data: c, Timestamp: logTime})
		}
		// Nil entries anywhere are skipped.
		if bit(6) {
			s.Vertexes = append([]*client.Vertex{nil}, s.Vertexes...)
			s.Logs = append(s.Logs, nil)
		}
		if bit(7) {
			s.Statuses = append(s.Statuses, nil)
			s.Warnings = append([]*client.VertexWarning{nil}, s.Warnings...)
		}
		if bit(8) {
			s.Statuses = nil
		}
		if bit(9) {
			s.Warnings = nil
		}
		if bit(10) {
			s.Vertexes = nil
		}
		if bit(11) {
			s.Logs = nil
		}
		wantKinds := ""
		for _, v := range s.Vertexes {
			if v != nil {
				wantKinds += "v"
			}
		}
		for _, st := range s.Statuses {
			if st != nil {
				wantKinds += "s"
			}
		}
		var wantLogs [][]byte
		for _, l := range s.Logs {
			if l != nil {
				wantKinds += "l"
				wantLogs = append(wantLogs, bytes.Clone(l.Data))
			}
		}
		for _, w := range s.Warnings {
			if w != nil {
				wantKinds += "w"
			}
		}

		events := FromSolveStatus(s)
		kinds := ""
		var gotLogs [][]byte
		for i, e := range events {
			if e.GetBuildId() != "" || e.GetSeq() != 0 || e.GetTime() != nil {
				t.Fatalf("event %d has fields that are the event log's to fill: %v", i, e)
			}
			set := 0
			if e.GetVertex() != nil {
				set++
				kinds += "v"
			}
			if e.GetStatus() != nil {
				set++
				kinds += "s"
			}
			if e.GetLog() != nil {
				set++
				kinds += "l"
				gotLogs = append(gotLogs, e.GetLog().GetData())
			}
			if e.GetWarning() != nil {
				set++
				kinds += "w"
			}
			if e.GetState() != nil || e.GetResult() != nil || e.GetError() != nil {
				set++
			}
			if set != 1 || e.GetEvent() == nil {
				t.Fatalf("event %d has %d payloads: %v", i, set, e)
			}
			if _, err := proto.Marshal(e); err != nil {
				t.Fatalf("event %d does not marshal: %v\n%v", i, err, e)
			}
			if w := e.GetWarning(); w != nil && len(w.GetDetail()) != len(detailLines) {
				t.Fatalf("warning has %d detail lines, want %d", len(w.GetDetail()), len(detailLines))
			}
			if lg := e.GetLog(); lg != nil {
				back := ToSolveStatus(e)
				if back == nil || len(back.Logs) != 1 || !bytes.Equal(back.Logs[0].Data, lg.GetData()) {
					t.Fatalf("log event %d maps back to %+v", i, back)
				}
				if stream >= math.MinInt32 && stream <= math.MaxInt32 && lg.GetStream() != int32(stream) {
					t.Fatalf("log event %d has stream %d, want %d", i, lg.GetStream(), stream)
				}
			}
		}
		if kinds != wantKinds {
			t.Fatalf("event kinds %q, want %q", kinds, wantKinds)
		}
		if len(gotLogs) != len(wantLogs) {
			t.Fatalf("%d log events, want %d", len(gotLogs), len(wantLogs))
		}
		for i := range wantLogs {
			if !bytes.Equal(gotLogs[i], wantLogs[i]) {
				t.Fatalf("log chunk %d is %q, want %q", i, gotLogs[i], wantLogs[i])
			}
		}
		if !bit(11) && !bytes.Equal(bytes.Join(gotLogs, nil), logData) {
			t.Fatalf("log data %q, want %q", bytes.Join(gotLogs, nil), logData)
		}
	})
}
