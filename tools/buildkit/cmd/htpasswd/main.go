// Command htpasswd prints one htpasswd line ("user:bcrypt-hash") for the
// local registry's auth.htpasswd. The password is read from a file so it
// never appears on a command line.
//
//	htpasswd USER PASSWORD_FILE > htpasswd
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: htpasswd USER PASSWORD_FILE")
		os.Exit(2)
	}
	user := os.Args[1]
	if user == "" || strings.ContainsAny(user, ":\n") {
		fmt.Fprintln(os.Stderr, "htpasswd: invalid user name")
		os.Exit(2)
	}
	b, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "htpasswd:", err)
		os.Exit(1)
	}
	pass := strings.TrimRight(string(b), "\r\n")
	if pass == "" {
		fmt.Fprintln(os.Stderr, "htpasswd: empty password")
		os.Exit(1)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(os.Stderr, "htpasswd:", err)
		os.Exit(1)
	}
	fmt.Printf("%s:%s\n", user, hash)
}
