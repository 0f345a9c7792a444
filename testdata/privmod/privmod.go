// Package privmod is the local stack's private Go module: scripts/up.sh
// serves it as the bare repository .stack/git-private/privmod.git (tag
// v1.0.0), over HTTPS with a token (module path 127.0.0.1/privmod.git, which
// the go command fetches from https://127.0.0.1/privmod.git) and over ssh.
package privmod

// Greeting is what testdata/privateapp prints.
func Greeting() string { return "hello from privmod" }
