// Command benchproxy serves a directory in the GOPROXY layout (the proxy
// that genrepos writes) over HTTP on 127.0.0.1, on a free port unless -addr
// says which; it writes the URL to -url-file once it listens and serves
// until it is stopped.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	dir := flag.String("dir", "", "the proxy `DIR` to serve")
	addr := flag.String("addr", "127.0.0.1:0", "the `ADDRESS` to listen on")
	urlFile := flag.String("url-file", "", "the `FILE` to write the proxy's URL to once it listens")
	flag.Parse()
	if *dir == "" {
		log.Fatal("benchproxy: -dir is required")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("benchproxy: %v", err)
	}
	url := fmt.Sprintf("http://%s", ln.Addr())
	if *urlFile != "" {
		tmp := *urlFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
			log.Fatalf("benchproxy: %v", err)
		}
		if err := os.Rename(tmp, *urlFile); err != nil {
			log.Fatalf("benchproxy: %v", err)
		}
	}
	log.Printf("benchproxy: serving %s at %s", *dir, url)
	srv := &http.Server{Handler: http.FileServer(http.Dir(*dir)), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
