//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
)

// TestBuildOnTTY runs a build with stderr on a pseudo-terminal, where the
// progress display redraws in place: no state lines may go there.
func TestBuildOnTTY(t *testing.T) {
	for _, mode := range []string{"auto", "tty"} {
		t.Run(mode, func(t *testing.T) {
			ptm, slavePath, err := console.NewPty()
			if err != nil {
				t.Skipf("no pseudo-terminal: %v", err)
			}
			defer ptm.Close()
			if err := ptm.Resize(console.WinSize{Height: 24, Width: 100}); err != nil {
				t.Fatal(err)
			}
			tty, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer tty.Close()
			screen := make(chan string, 1)
			go func() {
				var b bytes.Buffer
				_, _ = io.Copy(&b, ptm) // ends with EIO once the terminal is closed
				screen <- b.String()
			}()

			addr := (&fakeServer{events: successEvents()}).start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout bytes.Buffer
			code := run(ctx, []string{"buildsvc", "build", "--server", addr, "--progress", mode, "--repo", "https://git.example/app.git", "--tag", "r.example/app:v1"}, &stdout, tty)
			tty.Close()
			out := <-screen
			if code != exitOK || stdout.String() != testImage+"\n" {
				t.Fatalf("exit code %d, stdout %q; want 0 and the image\nterminal:\n%q", code, stdout.String(), out)
			}
			if !strings.Contains(out, "go build ./cmd/app") {
				t.Errorf("the terminal does not show the build's step:\n%q", out)
			}
			if strings.Contains(out, "build b-1:") {
				t.Errorf("state lines went to the terminal:\n%q", out)
			}
		})
	}
}
