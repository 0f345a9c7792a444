package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestConnListener serves HTTP over connections handed to the listener,
// as a forwarded socket's are, and refuses them once closed.
func TestConnListener(t *testing.T) {
	l := newConnListener()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "path "+r.URL.Path)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	client := &http.Client{Transport: &http.Transport{Dial: func(string, string) (net.Conn, error) {
		ours, theirs := net.Pipe()
		go l.serve(theirs)
		return ours, nil
	}}}
	for _, p := range []string{"/a", "/b"} {
		resp, err := client.Get("http://session" + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "path "+p {
			t.Errorf("GET %s: %q", p, b)
		}
	}
	srv.Close()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	ours, theirs := net.Pipe()
	l.serve(theirs) // returns at once: the listener is closed
	if _, err := ours.Write([]byte("x")); err == nil {
		t.Error("a connection handed to a closed listener stayed open")
	}
}
