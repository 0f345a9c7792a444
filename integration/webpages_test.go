//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/buildsvc/buildsvc/buildkitd"
	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
	"github.com/buildsvc/buildsvc/server"
)

// until waits until js is true on the page.
func until(js string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](js)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// auditJS lists what a person with a screen reader or no mouse would miss
// on the page shown: a control, link or table with no name, a build state
// with no text (colour alone), an image with no alternative.
const auditJS = `(() => {
  const bad = [];
  const name = (e) => (e.getAttribute("aria-label") || (e.labels && [...e.labels].map((l) => l.textContent).join(" ")) || e.textContent || e.getAttribute("title") || "").trim();
  const where = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + String(e.className).split(" ").join(".") : "");
  for (const e of document.querySelectorAll("a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])")) {
    if (!name(e)) bad.push("no name: " + where(e));
  }
  for (const e of document.querySelectorAll("table")) if (!e.getAttribute("aria-label") && !e.querySelector("caption")) bad.push("table without a name: " + where(e));
  for (const e of document.querySelectorAll(".state")) if (!e.textContent.trim()) bad.push("a state shown by colour alone: " + where(e));
  for (const e of document.querySelectorAll("img")) if (!e.hasAttribute("alt")) bad.push("image without alt: " + where(e));
  if (!document.title) bad.push("no title");
  if (!document.querySelector("h1")) bad.push("no h1");
  return bad;
})()`

// audit fails t with auditJS's findings on the page shown.
func (b *browser) audit(t *testing.T, page string) {
	t.Helper()
	if bad := value(t, b, 10*time.Second, "audit "+page, chromedp.Evaluate[[]string](auditJS)); len(bad) > 0 {
		t.Errorf("%s: %s", page, strings.Join(bad, "; "))
	}
}

// tabStops presses Tab n times from the top of the page and returns what
// had the focus after each press (tag#id, or the link's path).
func (b *browser) tabStops(t *testing.T, n int) []string {
	t.Helper()
	b.do(t, 10*time.Second, "focus the top", chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(), window.scrollTo(0, 0)`))
	var stops []string
	for range n {
		b.do(t, 10*time.Second, "press Tab", chromedp.KeyEvent("\t"))
		stops = append(stops, value(t, b, 10*time.Second, "the focus", chromedp.Evaluate[string](`(() => {
  const e = document.activeElement;
  if (!e || e === document.body) return "body";
  if (e.tagName === "A") return e.getAttribute("href").startsWith("#") ? "a:" + e.getAttribute("href") : "a:" + new URL(e.href).pathname;
  return e.tagName.toLowerCase() + (e.id ? "#" + e.id : "");
})()`)))
	}
	return stops
}

// reaches fails t unless every one of want is among stops.
func reaches(t *testing.T, page string, stops []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(stops, w) {
			t.Errorf("%s: Tab never reaches %s; it goes %s", page, w, strings.Join(stops, " → "))
		}
	}
}

// The list in Chromium finds builds: a deep link with a repository and a
// page size shows that repository's builds newest first, pages to the
// older ones and back (and the back button returns to the page before);
// the filters work from the keyboard (type a repository, Enter; pick a
// state); a build's logs are searched and shown per step. Every control
// is reachable with Tab and has a name; no console error.
func TestWebFindingBuilds(t *testing.T) {
	t.Parallel()
	ts := startWebTestServer(t, nil)
	c := ts.Client
	salt := fmt.Sprint("finding builds ", time.Now().UnixNano())
	many := newRepo(t, noModuleFiles(salt, ""))
	var ids []string // oldest first
	for i := range 3 {
		o := build(t, c, &buildv1.CreateImageRequest{GitRepo: many.URL, GitCommit: "main", ImageTag: tagFor(t, fmt.Sprint("many-", i)), BuildFlags: []string{"-v"}})
		requireSuccess(t, o)
		ids = append(ids, o.events[0].GetBuildId())
	}
	bad := newRepo(t, noModuleFiles(salt+" bad", "var _ = undefinedThing\n"))
	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: bad.URL, GitCommit: "main", ImageTag: tagFor(t, "bad")})
	failed := o.events[0].GetBuildId()

	b := newBrowser(t)
	rows := func(what string) []string {
		t.Helper()
		return value(t, b, 10*time.Second, what, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr[data-build]")].map((r) => r.dataset.build)`))
	}
	// waitRows waits until the list shows exactly want.
	waitRows := func(what string, want ...string) {
		t.Helper()
		js := fmt.Sprintf(`JSON.stringify([...document.querySelectorAll("tr[data-build]")].map((r) => r.dataset.build)) === %q`, mustJSON(t, want))
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, until(js)); err != nil {
			t.Fatalf("%s: the list shows %v, want %v", what, rows(what), want)
		}
	}

	b.do(t, time.Minute, "a deep link to the repository's builds, two a page",
		chromedp.Navigate(ts.WebURL+"/?repo="+many.URL+"&size=2"), chromedp.WaitVisible(chromedp.CSS("table.builds")))
	waitRows("the first page", ids[2], ids[1])
	b.do(t, 30*time.Second, "to the older builds", chromedp.Click(chromedp.CSS("#older")))
	waitRows("the second page", ids[0])
	if loc := value(t, b, 5*time.Second, "the address", chromedp.Location()); !strings.Contains(loc, "page=") {
		t.Errorf("the second page's address has no page token: %s", loc)
	}
	b.do(t, 30*time.Second, "back to the newest", chromedp.Click(chromedp.CSS("#newest")))
	waitRows("the first page again", ids[2], ids[1])
	b.do(t, 30*time.Second, "the back button", chromedp.NavigateBack())
	waitRows("the back button's page", ids[0])

	// The filters, by keyboard.
	b.do(t, time.Minute, "type a repository and press Enter",
		chromedp.Navigate(ts.WebURL+"/"), chromedp.WaitVisible(chromedp.CSS("#f-repo")),
		chromedp.Focus(chromedp.CSS("#f-repo")), chromedp.SendKeys(chromedp.CSS("#f-repo"), bad.URL+"\r"))
	waitRows("the bad repository's builds", failed)
	if loc := value(t, b, 5*time.Second, "the address", chromedp.Location()); !strings.Contains(loc, "repo=") {
		t.Errorf("the filter is not in the address: %s", loc)
	}
	b.do(t, 30*time.Second, "pick state succeeded",
		chromedp.Focus(chromedp.CSS("#f-state")),
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("f-state"); s.value = "succeeded"; s.dispatchEvent(new Event("change")); })()`),
		until(`[...document.querySelectorAll("table.builds td")].some((td) => td.textContent === "No builds.")`))
	b.do(t, 30*time.Second, "pick state failed",
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("f-state"); s.value = "failed"; s.dispatchEvent(new Event("change")); })()`))
	waitRows("the bad repository's failed builds", failed)
	b.audit(t, "the list")
	stops := b.tabStops(t, 14)
	reaches(t, "the list", stops, "a:#main", "a:/", "a:/operators", "select#f-state", "input#f-repo", "select#f-size", "a:/builds/"+failed)

	// A build's logs: searched, and per step.
	b.do(t, time.Minute, "a build's logs", chromedp.Navigate(ts.WebURL+"/builds/"+ids[0]),
		until(`document.getElementById("logs").textContent.includes("example.com/webpage")`))
	all := value(t, b, 5*time.Second, "all the logs", chromedp.Text(chromedp.CSS("#logs")))
	b.do(t, 30*time.Second, "search the logs", chromedp.SendKeys(chromedp.CSS("#log-search"), "webpage"),
		chromedp.WaitVisible(chromedp.CSS("#logs mark")))
	found := value(t, b, 5*time.Second, "the lines found", chromedp.Evaluate[[]string](`document.getElementById("logs").textContent.split("\n").filter((l) => l && !l.startsWith("# "))`))
	marks := value(t, b, 5*time.Second, "the marks", chromedp.Evaluate[[]string](`[...document.querySelectorAll("#logs mark")].map((m) => m.textContent)`))
	if len(found) == 0 || len(found) != len(marks) || len(found) >= strings.Count(all, "\n") {
		t.Errorf("the search shows %d lines with %d marks, of %d", len(found), len(marks), strings.Count(all, "\n"))
	}
	for _, l := range found {
		if !strings.Contains(strings.ToLower(l), "webpage") {
			t.Errorf("the search shows a line without the word: %q", l)
		}
	}
	b.do(t, 30*time.Second, "clear the search and pick one step",
		chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("log-search"); s.value = ""; s.dispatchEvent(new Event("input"));
  const sel = document.getElementById("log-step"); sel.value = sel.options[sel.options.length - 1].value; sel.dispatchEvent(new Event("change")); })()`))
	one := value(t, b, 5*time.Second, "one step's logs", chromedp.Text(chromedp.CSS("#logs")))
	if one == "" || len(one) >= len(all) || strings.Contains(one, "\n# ") || strings.HasPrefix(one, "# ") {
		t.Errorf("one step's logs (%d bytes, of %d) still show other steps' heads", len(one), len(all))
	}
	b.audit(t, "a build")
	stops = b.tabStops(t, 12)
	reaches(t, "a build", stops, "a:/", "select#log-step", "input#log-search", "pre#logs")
	if !slices.ContainsFunc(stops, func(s string) bool { return s == "button" }) {
		t.Errorf("a build: Tab never reaches a copy button; it goes %s", strings.Join(stops, " → "))
	}

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// The operators' page in Chromium shows what the server knows, live: a
// pool of the stack's buildkitd and one that does not answer shows one
// healthy worker with its running build and its cache's size, and one out
// with why; the queue and running counts are GetStatus's and follow a
// build's start and end. Screenshots at 1280 and 390 px.
func TestWebOperators(t *testing.T) {
	t.Parallel()
	st := loadStack(t)
	dead := "unix://" + t.TempDir() + "/no-buildkitd.sock"
	pool := runPool(t, []buildkitd.Endpoint{{Address: st.BuildKitAddr}, {Address: dead}}, 0)
	waitWorker(t, pool, st.BuildKitAddr, true)
	waitWorker(t, pool, dead, false)

	hang := newHangingProxy(t)
	ts := startWebTestServer(t, func(c *server.Config) { hang.configure(c); c.Builders = server.WorkerPool(pool) })
	conn, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	admin := buildv1.NewAdminServiceClient(conn)

	b := newBrowser(t)
	text := func(sel string) string {
		t.Helper()
		return value(t, b, 10*time.Second, sel, chromedp.Text(chromedp.CSS(sel)))
	}
	b.do(t, time.Minute, "the operators' page", chromedp.Navigate(ts.WebURL+"/operators"),
		chromedp.WaitVisible(chromedp.CSS("table.workers")))
	healthy, out := fmt.Sprintf(`tr[data-worker=%q]`, st.BuildKitAddr), fmt.Sprintf(`tr[data-worker=%q]`, dead)
	b.do(t, 30*time.Second, "one worker healthy, one out",
		chromedp.WaitVisible(chromedp.CSS(healthy+` [data-health="healthy"]`)), chromedp.WaitVisible(chromedp.CSS(out+` [data-health="out"]`)))
	if why := text(out + " td.why"); why == "" {
		t.Error("the worker that is out does not say why")
	}
	if got := text("#c-workers .n"); got != "1 of 2" {
		t.Errorf("healthy workers: %q, want 1 of 2", got)
	}

	start, err := ts.Client.StartBuild(t.Context(), startRequest(hang.request(hangingRepo(t), tagFor(t, "waits"))))
	if err != nil {
		t.Fatal(err)
	}
	hang.waitReached(t)
	b.do(t, time.Minute, "the running build, live", until(`document.querySelector("#c-running .n")?.textContent === "1"`),
		until(fmt.Sprintf(`document.querySelector(%q)?.children[2].textContent === "1"`, healthy)))
	status, err := admin.GetStatus(t.Context(), &buildv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := text("#c-queued .n"), fmt.Sprint(status.GetQueued()); got != want {
		t.Errorf("queued: the page shows %s, GetStatus says %s", got, want)
	}
	for _, w := range status.GetWorkers() {
		sel := fmt.Sprintf(`tr[data-worker=%q] td.disk`, w.GetName())
		cell := text(sel)
		if w.GetDiskBytes() == 0 {
			if cell != "unknown" {
				t.Errorf("worker %s, size unknown: the page shows %q", w.GetName(), cell)
			}
			continue
		}
		// The page's "980.2 MiB" is GetStatus's bytes, to its precision
		// (the cache may change between the two reads).
		var n float64
		var unit string
		if _, err := fmt.Sscanf(cell, "%g %s", &n, &unit); err != nil {
			t.Errorf("worker %s's cache: the page shows %q", w.GetName(), cell)
			continue
		}
		mult := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
		if got, want := n*mult, float64(w.GetDiskBytes()); mult == 0 || got < want*0.9 || got > want*1.1 {
			t.Errorf("worker %s's cache: the page shows %q, GetStatus %d bytes", w.GetName(), cell, w.GetDiskBytes())
		}
	}
	if text(healthy+" td.disk") == "unknown" {
		t.Error("the healthy worker's cache size is unknown on the page")
	}
	b.audit(t, "the operators' page")
	b.screenshot(t, "operators", 1280)
	b.screenshot(t, "operators", 390)

	if _, err := ts.Client.CancelBuild(t.Context(), &buildv1.CancelBuildRequest{BuildId: start.GetBuildId()}); err != nil {
		t.Fatal(err)
	}
	b.do(t, time.Minute, "the build's end, live", chromedp.EmulateViewport(1280, 900),
		until(`document.querySelector("#c-running .n")?.textContent === "0"`))
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
