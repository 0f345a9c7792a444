package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode/utf8"

	units "github.com/docker/go-units"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// listClock is the time relative times in `builds ls` are counted to; tests
// set it.
var listClock = time.Now

// buildRow is one build as `builds ls` shows it, and what a --format
// template sees. Every field is a string, empty when the build has no such
// value; rowFieldsHelp documents them for --help.
type buildRow struct {
	ID        string
	State     string
	Status    string
	Repo      string
	Ref       string
	Commit    string
	Tag       string
	Image     string
	Created   string
	CreatedAt string
	Duration  string
	Error     string
	Labels    string
}

// rowHeader is the header line of a table: each field's column title.
var rowHeader = buildRow{
	ID: "BUILD", State: "STATE", Status: "STATUS", Repo: "REPO", Ref: "REF", Commit: "COMMIT", Tag: "TAG",
	Image: "IMAGE", Created: "CREATED", CreatedAt: "CREATED AT", Duration: "DURATION", Error: "ERROR", Labels: "LABELS",
}

// rowFieldsHelp describes buildRow's fields, for the ls command's help.
const rowFieldsHelp = "  .ID         the build's id; shortened, unless --no-trunc, to the shortest prefix\n" +
	"              of at least 15 characters that no other listed build has\n" +
	"  .State      the state's name: queued, building, failed, ...\n" +
	"  .Status     the state, with the place in the queue: \"queued (2 ahead)\"\n" +
	"  .Repo       the repository URL, as requested\n" +
	"  .Ref        the ref as requested (empty: the default branch)\n" +
	"  .Commit     the commit SHA it resolved to; 12 characters unless --no-trunc\n" +
	"  .Tag        the image tag pushed to\n" +
	"  .Image      the pushed image, pinned by digest, once it succeeded\n" +
	"  .Created    when it was created: \"2 minutes ago\", or RFC 3339 with --no-trunc\n" +
	"  .CreatedAt  when it was created, RFC 3339\n" +
	"  .Duration   how long it has run: \"1m36s\"\n" +
	"  .Error      its error's message, once it failed; cut to 40 characters unless\n" +
	"              --no-trunc\n" +
	"  .Labels     its build labels, KEY=VALUE,... sorted by key (--filter label=...)\n" +
	"Functions: json, upper, lower, truncate ({{truncate .Error 20}}), and\n" +
	"text/template's own, such as or ({{or .Commit \"-\"}})."

// defaultFormat is the table `builds ls` prints without --format.
const defaultFormat = `table {{.ID}}\t{{.Status}}\t{{or .Repo "-"}}\t{{or .Commit "-"}}\t{{or .Tag "-"}}\t{{or .Created "-"}}\t{{or .Duration "-"}}\t{{or .Error "-"}}`

// shortIDLen is the least length of a shortened build id: the server's ids
// start with their creation time, and 15 characters (20060102-150405) take
// it to the second.
const shortIDLen = 15

// errorLen is how much of a build's error message a row shows, unless
// --no-trunc.
const errorLen = 40

// rowOptions say how builds become rows.
type rowOptions struct {
	// noTrunc keeps ids, commits and errors whole and shows times in RFC
	// 3339 instead of relative to now.
	noTrunc bool
	// now is when relative times are counted to and running builds'
	// durations end.
	now time.Time
}

// buildRows makes the rows of builds.
func buildRows(builds []*buildv1.BuildInfo, opts rowOptions) []buildRow {
	ids := make([]string, len(builds))
	for i, info := range builds {
		ids[i] = info.GetBuildId()
	}
	if !opts.noTrunc {
		ids = shortIDs(ids)
	}
	rows := make([]buildRow, len(builds))
	for i, info := range builds {
		req := info.GetRequest()
		r := buildRow{
			ID:        ids[i],
			State:     stateName(info.GetState()),
			Status:    tableState(info),
			Repo:      req.GetGitRepo(),
			Ref:       req.GetGitCommit(),
			Commit:    info.GetCommit(),
			Tag:       req.GetImageTag(),
			Image:     info.GetResult().GetImage(),
			CreatedAt: formatTime(info.GetCreateTime()),
			Error:     oneLine(info.GetError().GetMessage()),
			Labels:    labelList(info.GetLabels()),
		}
		if info.GetStartTime() != nil {
			r.Duration = buildDuration(info, opts.now)
		}
		if opts.noTrunc {
			r.Created = r.CreatedAt
		} else {
			r.Commit = shortCommit(r.Commit)
			r.Error = truncate(r.Error, errorLen)
			if c := info.GetCreateTime(); c != nil {
				r.Created = relativeTime(c.AsTime(), opts.now)
			}
		}
		rows[i] = r
	}
	return rows
}

// labelList is labels as KEY=VALUE pairs sorted by key, joined by commas.
func labelList(labels map[string]string) string {
	pairs := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		pairs = append(pairs, k+"="+labels[k])
	}
	return strings.Join(pairs, ",")
}

// relativeTime says how long before now t was, as docker does: "2 minutes
// ago", "About an hour ago".
func relativeTime(t, now time.Time) string {
	return units.HumanDuration(now.Sub(t)) + " ago"
}

// shortIDs shortens each id to its shortest prefix of at least shortIDLen
// characters that none of the other ids has, so that it still names its
// build (see findBuild) unless a build that is not in ids has it too.
func shortIDs(ids []string) []string {
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	out := make([]string, len(ids))
	for i, id := range ids {
		// Only the ids next to id in sorted order can share a longer
		// prefix with it than any other.
		n := shortIDLen
		j, _ := slices.BinarySearch(sorted, id)
		for _, k := range []int{j - 1, j + 1} {
			if k >= 0 && k < len(sorted) && sorted[k] != id {
				n = max(n, commonPrefix(id, sorted[k])+1)
			}
		}
		out[i] = id[:min(n, len(id))]
	}
	return out
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// oneLine joins the lines of a message with spaces, for a table cell.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// truncate cuts s to n characters, the last of them "…", if it is longer.
func truncate(s string, n int) string {
	if n <= 0 || utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// listFormat is a parsed --format: a template run once a row, and, for a
// table, once more on rowHeader first, with the columns aligned.
type listFormat struct {
	tmpl  *template.Template
	table bool
}

// templateFuncs are the functions a --format template may call besides
// text/template's own.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"upper":    strings.ToUpper,
	"lower":    strings.ToLower,
	"truncate": truncate,
}

// parseFormat parses a --format value: a text/template over buildRow,
// a table with a header line if it starts with "table" ("table" alone is
// the default table). `\t` and `\n` in it stand for a tab and a newline.
// The template is tried on an empty row, so that a field that does not exist
// fails here and not after the call to the server.
func parseFormat(format string) (listFormat, error) {
	if strings.TrimSpace(format) == "" || strings.TrimSpace(format) == "table" {
		format = defaultFormat
	}
	var f listFormat
	if rest, ok := strings.CutPrefix(strings.TrimLeft(format, " "), "table"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
		f.table, format = true, strings.TrimLeft(rest, " ")
	}
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	tmpl, err := template.New("format").Funcs(templateFuncs).Option("missingkey=error").Parse(format)
	if err != nil {
		return listFormat{}, err
	}
	f.tmpl = tmpl
	if err := tmpl.Execute(io.Discard, buildRow{}); err != nil {
		return listFormat{}, err
	}
	return f, nil
}

// write prints rows in the format; a table without rows prints nothing, not
// even its header.
func (f listFormat) write(w io.Writer, rows []buildRow) error {
	if len(rows) == 0 {
		return nil
	}
	out := w
	var tw *tabwriter.Writer
	if f.table {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		out = tw
		if err := f.line(out, rowHeader); err != nil {
			return err
		}
	}
	for _, r := range rows {
		if err := f.line(out, r); err != nil {
			return err
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

func (f listFormat) line(w io.Writer, r buildRow) error {
	if err := f.tmpl.Execute(w, r); err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}
