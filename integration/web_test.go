//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	buildv1 "github.com/buildsvc/buildsvc/proto/build/v1"
)

// browser is a headless Chromium (Debian's) driven by chromedp, with the
// page's console errors and uncaught exceptions collected.
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	exe := "/usr/bin/chromium"
	if _, err := os.Stat(exe); err != nil {
		t.Fatalf("Chromium is not installed at %s (scripts/test.sh installs Debian's chromium): %v", exe, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{ctx: ctx}
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleType("error") || m.Type == chromedp.ConsoleException {
				b.mu.Lock()
				b.errors = append(b.errors, string(m.Type)+": "+m.Text)
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs steps within d.
func (b *browser) do(t *testing.T, d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(b.ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		t.Fatalf("%s: %v\nthe page's main:\n%s", what, err, html)
	}
}

// value runs a that gives a value, within d.
func value[T any](t *testing.T, b *browser, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// screenshot writes the page at width as .stack/screenshots/name-width.png
// for a person to look at.
func (b *browser) screenshot(t *testing.T, name string, width int64) {
	t.Helper()
	b.do(t, 30*time.Second, "resize for "+name, chromedp.EmulateViewport(width, 900), chromedp.Sleep(400*time.Millisecond))
	if w := value(t, b, 10*time.Second, "the page's width", chromedp.Evaluate[int64](`document.documentElement.scrollWidth`)); w > width {
		t.Errorf("%s at %d px: the page is %d px wide (it scrolls sideways)", name, width, w)
	}
	png := value(t, b, 30*time.Second, "screenshot "+name, chromedp.FullScreenshot(100)) // 100: PNG
	dir := filepath.Join(stackDir(t), "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%d.png", name, width))
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(png))
}

// The page in a real headless Chromium: a build started through the API
// appears in the list and changes state there without a reload; a build's
// page draws the timeline of its steps as they run and streams its logs
// (its box keeps its size), and ends showing the image's digest; the back
// button returns to the list; a running build is cancelled from its page
// (by keyboard) and ends CANCELLED; a build that fails shows its compiler
// error. Screenshots at 1280 and 390 px go to .stack/screenshots. The page
// logs no console error.
func TestWebPage(t *testing.T) {
	t.Parallel()
	// Builds that need a module wait on it (the hanging proxy): they stay
	// BUILDING as long as the test wants; noModuleFiles' need none.
	hang := newHangingProxy(t)
	ts := startWebTestServer(t, hang.configure)
	c := ts.Client
	b := newBrowser(t)

	b.do(t, time.Minute, "open the list", chromedp.Navigate(ts.WebURL+"/"), chromedp.WaitVisible(chromedp.CSS("table.builds")))
	waiting, err := c.StartBuild(t.Context(), startRequest(hang.request(hangingRepo(t), tagFor(t, "waits"))))
	if err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`tr[data-build=%q]`, waiting.GetBuildId())
	b.do(t, time.Minute, "the new build appears in the list, live", chromedp.WaitVisible(chromedp.CSS(row)))
	b.do(t, 5*time.Minute, "and is seen building, live", chromedp.WaitVisible(chromedp.CSS(row+` [data-state="building"]`)))
	b.screenshot(t, "list", 1280)
	b.screenshot(t, "list", 390)

	// A build watched from its start: its steps draw, its logs stream.
	repo := newRepo(t, noModuleFiles(fmt.Sprint("web page ", time.Now().UnixNano()), ""))
	start, err := c.StartBuild(t.Context(), startRequest(&buildv1.CreateImageRequest{GitRepo: repo.URL, GitCommit: "main",
		ImageTag: tagFor(t, "ok"), BuildFlags: []string{"-v"}}))
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetBuildId()
	b.do(t, 30*time.Second, "open the build from the list", chromedp.EmulateViewport(1280, 900),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-build=%q] a`, id))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-build=%q] a`, id))), chromedp.WaitVisible(chromedp.CSS("#logs")))
	path := value(t, b, 10*time.Second, "the address", chromedp.Location())
	if !strings.HasSuffix(path, "/builds/"+id) {
		t.Errorf("the build's page is at %s", path)
	}
	height := `document.getElementById("logs").getBoundingClientRect().height`
	before := value(t, b, 10*time.Second, "the logs' height", chromedp.Evaluate[float64](height))
	b.do(t, 5*time.Minute, "the timeline draws steps", chromedp.WaitVisible(chromedp.CSS(".tl-row .tl-bar")))
	value(t, b, 5*time.Minute, "the logs stream go build's output", chromedp.Poll[bool](`document.getElementById("logs").textContent.includes("example.com/webpage")`, chromedp.WithPollingTimeout(4*time.Minute)))
	after := value(t, b, 10*time.Second, "the logs' height", chromedp.Evaluate[float64](height))
	if before == 0 || before != after {
		t.Errorf("the logs' box was %vpx high before the output, %vpx after", before, after)
	}
	b.do(t, 5*time.Minute, "the build ends on the page", chromedp.WaitVisible(chromedp.CSS(`h1 ~ dl [data-state="succeeded"]`)))
	digest := value(t, b, 10*time.Second, "its digest", chromedp.Text(chromedp.CSS("#digest")))
	info, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatal(err)
	}
	if digest != info.GetResult().GetDigest() {
		t.Errorf("the page shows digest %q, the build has %q", digest, info.GetResult().GetDigest())
	}
	if rows := value(t, b, 10*time.Second, "count the timeline's steps", chromedp.Evaluate[int](`document.querySelectorAll(".tl-row").length`)); rows < 3 {
		t.Errorf("the timeline has %d steps", rows)
	}
	b.screenshot(t, "build", 1280)
	b.screenshot(t, "build", 390)
	b.do(t, 30*time.Second, "the back button returns to the list", chromedp.EmulateViewport(1280, 900),
		chromedp.NavigateBack(), chromedp.WaitVisible(chromedp.CSS(row)))

	// Cancel the waiting build from its page, with the keyboard.
	b.do(t, 2*time.Minute, "cancel the build from its page",
		chromedp.Navigate(ts.WebURL+"/builds/"+waiting.GetBuildId()),
		chromedp.WaitVisible(chromedp.CSS(`h1 ~ dl [data-state="building"]`)),
		chromedp.Focus(chromedp.CSS("#cancel")),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`h1 ~ dl [data-state="cancelled"]`)))
	got, err := c.GetBuild(t.Context(), &buildv1.GetBuildRequest{BuildId: waiting.GetBuildId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetState() != buildv1.BuildState_BUILD_STATE_CANCELLED {
		t.Errorf("cancelled from the page, the build is %v", got.GetState())
	}

	// A build that fails shows its compiler error.
	o := build(t, c, &buildv1.CreateImageRequest{GitRepo: newRepo(t, noModuleFiles(fmt.Sprint("bad ", time.Now().UnixNano()), "var _ = undefinedThing\n")).URL, GitCommit: "main", ImageTag: tagFor(t, "bad")})
	failed := o.events[0].GetBuildId()
	b.do(t, time.Minute, "the failed build's page", chromedp.Navigate(ts.WebURL+"/builds/"+failed), chromedp.WaitVisible(chromedp.CSS("#build-error")))
	errText := value(t, b, 10*time.Second, "its error", chromedp.Text(chromedp.CSS("#build-error")))
	if !strings.Contains(errText, "COMPILE_ERROR") || !strings.Contains(errText, "undefined: undefinedThing") {
		t.Errorf("the error box says %q", errText)
	}
	b.screenshot(t, "failed", 1280)
	b.screenshot(t, "failed", 390)

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// noModuleFiles is a main package of module example.com/webpage that needs
// no module, salted so that it compiles anew, with extra Go code.
func noModuleFiles(salt, extra string) map[string]string {
	return map[string]string{
		"go.mod":  "module example.com/webpage\n\ngo 1.26\n",
		"main.go": fmt.Sprintf("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(%q) }\n%s", salt, extra),
	}
}
