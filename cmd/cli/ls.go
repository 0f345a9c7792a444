package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

func lsCommand() *cli.Command {
	return withExamples(&cli.Command{
		Name:  "ls",
		Usage: "list your builds, newest (or oldest) first",
		Description: "Prints a table of builds, one page at a time (see --limit); when there are more,\n" +
			"stderr says which --page-token shows the next page (give it with the same\n" +
			"filters and --order), and --all shows every page. The server filters.\n" +
			"Times are relative (\"2 minutes ago\"), and ids, commits and errors shortened;\n" +
			"--no-trunc shows them whole, with times in RFC 3339. A shortened id is still\n" +
			"unique among the builds listed, so the other builds commands take it.\n\n" +
			"--filter KEY=VALUE keeps some builds:\n" +
			"  state=STATE       in STATE, one of " + strings.Join(stateNames(), ", ") + "\n" +
			"  repo=URL          of the repository URL (exactly as requested; one)\n" +
			"  tag=IMAGE         pushing to the tag IMAGE (any of the build's tags)\n" +
			"  label=KEY=VALUE   with the build label KEY set to VALUE; label=KEY: with KEY\n" +
			"  reason=REASON     failed for REASON (COMPILE_ERROR, GIT_NOT_FOUND, ...)\n" +
			"  since=WHEN        created at or after WHEN: a duration ago (10m, 2h, 7d), an\n" +
			"                    RFC 3339 time or a date (2026-12-01, local time)\n" +
			"  before=WHEN       created before WHEN\n" +
			"Filters repeat or are separated by commas, and a part without \"=\" is one more\n" +
			"value of the key before it: state=failed,cancelled,repo=URL. Several states,\n" +
			"tags or reasons keep builds with any of them; every other filter must hold too.\n\n" +
			"--where takes the server's own filter (AIP-160), for what --filter cannot say:\n" +
			"  state = FAILED AND (labels.team = \"payments\" OR labels.team = \"search\")\n" +
			"Fields: state, git_repo, image_tag, commit, labels.KEY, tenant, create_time,\n" +
			"error.reason; operators = != < > <= >= and : (contains; FIELD:* is set); AND,\n" +
			"OR (binding tighter than AND), NOT or -, parentheses; quote values that are not\n" +
			"one word. It holds with --filter's filters.\n\n" +
			"--format prints each build with a Go text/template over these fields; starting\n" +
			"it with \"table\" prints a header and aligns the columns at each \\t:\n" +
			rowFieldsHelp + "\n\n" +
			"-q prints the full ids alone, one a line. With --output json, stdout is one JSON\n" +
			"object: {\"builds\": [BuildInfo, ...], \"nextPageToken\": \"...\"}, where\n" +
			"nextPageToken is empty on the last page.",
		Flags: withConnFlags([]cli.Flag{
			serverFlag(),
			outputFlag(),
			&cli.StringSliceFlag{Name: "filter", Aliases: []string{"f"}, Usage: "keep the builds that match `KEY=VALUE`: state, repo, tag, label, reason, since or before (repeatable, or comma-separated)"},
			&cli.StringFlag{Name: "where", Usage: "keep the builds that match the server's filter `EXPR` (AIP-160), e.g. 'state = FAILED AND labels.team = \"payments\"'"},
			&cli.StringFlag{Name: "order", Usage: "list the builds `ORDER` first: newest or oldest", DefaultText: "newest"},
			&cli.StringFlag{Name: "format", Usage: "print each build with the Go `TEMPLATE`, e.g. '{{.ID}} {{.State}}'; \"table ...\" adds a header", DefaultText: "a table"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print the builds' full ids only"},
			&cli.BoolFlag{Name: "no-trunc", Usage: "show whole ids, commits and errors, and times in RFC 3339"},
			&cli.StringSliceFlag{Name: "state", Usage: "only builds in `STATE` (repeatable); the same as --filter state=STATE"},
			&cli.StringFlag{Name: "repo", Usage: "only builds of the repository `URL`; the same as --filter repo=URL"},
			&cli.IntFlag{Name: "limit", Usage: "at most `N` builds a page, up to 1000", DefaultText: "the server's, 50"},
			&cli.StringFlag{Name: "page-token", Usage: "start at the page `TOKEN` an earlier listing gave (with the same filters and --order)"},
			&cli.BoolFlag{Name: "all", Usage: "list every page, not only the first"},
		}),
		Action: runLs,
	},
		example{"buildsvc builds ls --filter state=failed --filter label=team=payments --no-trunc", "your team's failed builds, with their whole errors"},
		example{`buildsvc builds ls --filter since=24h --order oldest --format 'table {{.ID}}\t{{.State}}\t{{.Labels}}'`, "the builds of the last day, oldest first, with their labels"},
		example{`buildsvc builds ls --where 'state = FAILED AND (labels.team = "a" OR labels.team = "b")'`, "the server's own filter, for what --filter cannot say"},
	)
}

// lsOutput is how `builds ls` prints the builds.
type lsOutput struct {
	json   bool
	quiet  bool
	format listFormat
}

func runLs(cCtx *cli.Context) error {
	if cCtx.Args().Present() {
		return usageError(cCtx, "unexpected argument %q", cCtx.Args().First())
	}
	req, err := listRequest(cCtx)
	if err != nil {
		return err
	}
	out, err := lsOutputOf(cCtx)
	if err != nil {
		return err
	}
	bc, closeConn, err := dialServer(cCtx)
	if err != nil {
		return err
	}
	defer closeConn()

	resp, err := listBuilds(cCtx.Context, bc, req, cCtx.Bool("all"))
	if err != nil {
		return callError(cCtx, "list builds", err)
	}
	switch {
	case out.json:
		return writeList(cCtx.App.Writer, resp)
	case out.quiet:
		for _, info := range resp.GetBuilds() {
			if _, err := fmt.Fprintln(cCtx.App.Writer, info.GetBuildId()); err != nil {
				return err
			}
		}
	default:
		rows := buildRows(resp.GetBuilds(), rowOptions{noTrunc: cCtx.Bool("no-trunc"), now: listClock()})
		if err := out.format.write(cCtx.App.Writer, rows); err != nil {
			return err
		}
		if len(rows) == 0 && !cCtx.IsSet("format") {
			fmt.Fprintln(cCtx.App.ErrWriter, "no builds")
		}
	}
	if resp.GetNextPageToken() != "" {
		fmt.Fprintf(cCtx.App.ErrWriter, "more builds: --page-token %s\n", resp.GetNextPageToken())
	}
	return nil
}

// lsOutputOf reads the ls command's output flags, which exclude each other.
// Its errors are usage errors.
func lsOutputOf(cCtx *cli.Context) (lsOutput, error) {
	var out lsOutput
	var err error
	if out.json, err = jsonOutput(cCtx); err != nil {
		return lsOutput{}, err
	}
	out.quiet = cCtx.Bool("quiet")
	var given []string
	for _, name := range []string{"quiet", "format"} {
		if cCtx.IsSet(name) {
			given = append(given, "--"+name)
		}
	}
	if out.json {
		given = append(given, "--output json")
	}
	if len(given) > 1 {
		return lsOutput{}, usageError(cCtx, "%s: give one of them", strings.Join(given, " and "))
	}
	if out.format, err = parseFormat(cCtx.String("format")); err != nil {
		return lsOutput{}, usageError(cCtx, "--format %q: %v", cCtx.String("format"), err)
	}
	return out, nil
}

// listRequest makes the ListBuilds request from the ls command's flags. Its
// errors are usage errors. States and the repository go in the request's
// own fields; the other filters, and --where, in its filter.
func listRequest(cCtx *cli.Context) (*buildv1.ListBuildsRequest, error) {
	f, err := parseFilters(cCtx.StringSlice("filter"), listClock())
	if err != nil {
		return nil, usageError(cCtx, "%v", err)
	}
	for _, s := range cCtx.StringSlice("state") {
		if err := f.add("state", strings.TrimSpace(s)); err != nil {
			return nil, usageError(cCtx, "--state: %v", err)
		}
	}
	if repo := strings.TrimSpace(cCtx.String("repo")); repo != "" {
		if err := f.add("repo", repo); err != nil {
			return nil, usageError(cCtx, "--repo: %v", err)
		}
	}
	req := &buildv1.ListBuildsRequest{
		States:    f.states,
		GitRepo:   f.repo,
		Filter:    f.filter(cCtx.String("where")),
		PageToken: strings.TrimSpace(cCtx.String("page-token")),
	}
	switch order := strings.ToLower(strings.TrimSpace(cCtx.String("order"))); order {
	case "", "newest":
	case "oldest":
		req.OrderBy = "create_time"
	default:
		return nil, usageError(cCtx, "--order %q: want newest or oldest", cCtx.String("order"))
	}
	switch n := cCtx.Int("limit"); {
	case n < 0:
		return nil, usageError(cCtx, "--limit %d: want a positive number", n)
	case n > 1000:
		return nil, usageError(cCtx, "--limit %d: at most 1000", n)
	default:
		req.PageSize = int32(n)
	}
	return req, nil
}

// listBuilds lists the page req asks for or, if all is set, that page and
// every one after it, merged into one response.
func listBuilds(ctx context.Context, bc buildv1.BuildClient, req *buildv1.ListBuildsRequest, all bool) (*buildv1.ListBuildsResponse, error) {
	merged := &buildv1.ListBuildsResponse{}
	for {
		resp, err := bc.ListBuilds(ctx, req)
		if err != nil {
			return nil, err
		}
		merged.Builds = append(merged.Builds, resp.GetBuilds()...)
		merged.NextPageToken = resp.GetNextPageToken()
		if !all || merged.NextPageToken == "" {
			return merged, nil
		}
		if merged.NextPageToken == req.GetPageToken() {
			return nil, fmt.Errorf("the server gave page token %q for the page it came from", req.GetPageToken())
		}
		req.PageToken = merged.NextPageToken
	}
}

// writeList prints a listing as one JSON object with both of its keys, even
// when they are empty, so that scripts need not test for them.
func writeList(w io.Writer, resp *buildv1.ListBuildsResponse) error {
	out := struct {
		Builds        []json.RawMessage `json:"builds"`
		NextPageToken string            `json:"nextPageToken"`
	}{Builds: []json.RawMessage{}, NextPageToken: resp.GetNextPageToken()}
	for _, info := range resp.GetBuilds() {
		b, err := protojson.Marshal(info)
		if err != nil {
			return fmt.Errorf("encode build %s: %w", info.GetBuildId(), err)
		}
		out.Builds = append(out.Builds, b)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode builds: %w", err)
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
